package plugin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// weirError is an `error: MESSAGE` answer from weir to one request.
type weirError struct {
	Request string
	Msg     string
}

func (e *weirError) Error() string { return fmt.Sprintf("%q: %s", e.Request, e.Msg) }

// unacknowledged says whether weir published the change but some worker did not acknowledge it in time: the change
// is made (it stays published), so this is not a refusal; only its application by every worker is unverified.
func (e *weirError) unacknowledged() bool {
	// weir fixes this reply's text up to "acknowledged": "generation G published but not acknowledged ..." (older
	// weir: "generation G is published ...").
	return strings.HasPrefix(e.Msg, "generation ") && strings.Contains(e.Msg, " published but not acknowledged")
}

// ctlConn is one authenticated control connection to a weir replica (SPEC §4). Every request and its answer must
// finish before the connection's deadline (the per-replica timeout of one call).
type ctlConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialControl connects to <addr>, with TLS when <tc> says so, and authenticates with <token>.
func dialControl(ctx context.Context, addr string, tc *TLSConfig, token string) (*ctlConn, error) {
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if tc != nil && tc.Enabled {
		cfg, err := tlsClientConfig(tc, addr)
		if err != nil {
			nc.Close()
			return nil, err
		}
		tcn := tls.Client(nc, cfg)
		if err := tcn.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		nc = tcn
	}
	c := &ctlConn{c: nc, r: bufio.NewReader(nc)}
	if _, err := c.do("auth", token); err != nil {
		c.Close()
		var we *weirError
		if errors.As(err, &we) {
			return nil, fmt.Errorf("auth: %s", we.Msg)
		}
		return nil, fmt.Errorf("auth: %w", err)
	}
	return c, nil
}

func tlsClientConfig(tc *TLSConfig, addr string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: tc.ServerName, InsecureSkipVerify: tc.InsecureSkipVerify}
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	if tc.CAFile != "" {
		pem, err := os.ReadFile(tc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.caFile %s: no PEM certificate", tc.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (c *ctlConn) Close() error { return c.c.Close() }

// do sends one request made of <tokens> and returns its data lines; an `error:` answer is a *weirError.
func (c *ctlConn) do(tokens ...string) ([]string, error) {
	// The callers check every value where it enters the plugin; this is the last line of defence, since weir ends a
	// request at a line break and would run what follows it as a request of its own.
	for _, t := range tokens {
		if strings.ContainsAny(t, "\r\n\x00") {
			return nil, fmt.Errorf("%q: not sent: a token holds a line break or NUL", shortReq(tokens))
		}
	}
	line := formatLine(tokens)
	if _, err := c.c.Write([]byte(line + "\n")); err != nil {
		return nil, err
	}
	first, err := c.r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%q: no answer: %w", shortReq(tokens), err)
	}
	first = strings.TrimRight(first, "\r\n")
	var data []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("%q: answer cut short: %w", shortReq(tokens), err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		data = append(data, l)
	}
	switch {
	case first == "ok":
		return data, nil
	case strings.HasPrefix(first, "error: "):
		return nil, &weirError{Request: shortReq(tokens), Msg: strings.TrimPrefix(first, "error: ")}
	default:
		return nil, fmt.Errorf("%q: unexpected answer %q", shortReq(tokens), first)
	}
}

// shortReq names a request in messages; the token of `auth` never appears.
func shortReq(tokens []string) string {
	if len(tokens) > 0 && tokens[0] == "auth" {
		return "auth"
	}
	return formatLine(tokens)
}

// checkToken refuses a value that cannot travel in one control request: weir reads a line break (CR or LF) as the end
// of the request, so what follows it would run as a request of its own, and it reads a NUL as the end of the line.
// Quoting does not help: weir's tokenizer has no escape for them.
func checkToken(what, s string) error {
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("%s %q: contains a line break or NUL, which a weir control request cannot carry", what, s)
	}
	return nil
}

// needsQuote says whether weir's tokenizer would split or misread <s> written bare.
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b <= ' ' || b == '"' || b == '\\' || b == 0x7f {
			return true
		}
	}
	return false
}

// quote writes <s> as one control token.
func quote(s string) string {
	if !needsQuote(s) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func formatLine(tokens []string) string {
	q := make([]string, len(tokens))
	for i, t := range tokens {
		q[i] = quote(t)
	}
	return strings.Join(q, " ")
}

// splitLine is the inverse of formatLine: weir's tokenizer (spaces and tabs separate; double quotes with \" and \\).
func splitLine(line string) ([]string, error) {
	var out []string
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i == len(line) {
			return out, nil
		}
		var b strings.Builder
		if line[i] == '"' {
			i++
			for {
				if i == len(line) {
					return nil, fmt.Errorf("unterminated quote in %q", line)
				}
				if line[i] == '"' {
					i++
					break
				}
				if line[i] == '\\' {
					i++
					if i == len(line) {
						return nil, fmt.Errorf("unterminated quote in %q", line)
					}
				}
				b.WriteByte(line[i])
				i++
			}
		} else {
			for i < len(line) && line[i] != ' ' && line[i] != '\t' {
				b.WriteByte(line[i])
				i++
			}
		}
		out = append(out, b.String())
	}
}
