/* weirctl: sends one request to weir's control socket (SPEC §4) and prints the data lines of the reply.
 *
 * Blocking libc sockets with a send/receive timeout on the socket, so a stuck daemon never hangs a rollout
 * script. Exit status: 0 on `ok`; 1 on `error: ...` (the line goes to stderr); 2 when the request could not be
 * exchanged at all (bad usage, cannot connect, authentication refused, timeout, connection lost or a reply that
 * is not in the protocol), i.e. whenever it is unknown whether the daemon saw the request.
 *
 * tls://HOST:PORT is the TCP listener with `control-tls on`: a blocking OpenSSL connection over the same socket,
 * TLS 1.2 or 1.3, the server's certificate verified against --ca PATH (the system store without it) and its name
 * against HOST (a DNS name, or an IP address in the certificate's subjectAltName). */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "px/config.h"

#define DEFAULT_SOCKET "/tmp/weir.sock"
#define TCP_SCHEME "tcp://"
#define TLS_SCHEME "tls://"
#define IO_TIMEOUT_S 10
#define REPLY_MAX (64u << 20) /* far above any real reply; bounds memory if the peer is not weir */
#define TOKEN_MAX 4096

enum { EXIT_OK = 0, EXIT_REPLY_ERROR = 1, EXIT_FAIL = 2 };

static const char *prog = "weirctl";
static SSL *ssl; /* tls://: every byte goes through it */

/* One reply, read whole before anything is printed so a truncated reply prints nothing. */
struct reply {
    char *buf;
    size_t len, cap;
    size_t end;      /* bytes of the complete reply, 0 while incomplete */
    size_t scan;     /* start of the first line not yet looked at */
    unsigned nlines; /* complete lines seen so far */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [-s PATH | -s tcp://HOST:PORT -k TOKENFILE | -s tls://HOST:PORT -k TOKENFILE [--ca PATH]]\n"
            "       REQUEST...\n"
            "\n"
            "Sends one request to weir's control socket and prints the data lines of the reply.\n"
            "The arguments are joined by spaces; each is quoted as the control protocol needs.\n"
            "\n"
            "options:\n"
            "  -s PATH              Unix control socket (default " DEFAULT_SOCKET ")\n"
            "  -s tcp://HOST:PORT   TCP control listener; authenticates first with -k\n"
            "  -s tls://HOST:PORT   the same over TLS (weir's control-tls on); the certificate must name HOST\n"
            "  -k TOKENFILE         file holding the shared secret for tcp:// and tls://\n"
            "  --ca PATH            CA certificates (PEM) that verify the tls:// server (default: the system's)\n"
            "  -h, --help           print this help and exit\n"
            "  -V, --version        print the version and exit\n"
            "  --                   end of options\n"
            "\n"
            "requests:\n"
            "  get weight | set weight PERCENT | set weight VARIANT PERCENT [VARIANT PERCENT ...]\n"
            "  set header-route NAME [to VARIANT] CONDITION...\n"
            "  set mirror-route NAME PERCENT [to VARIANT] CONDITION...\n"
            "  set sticky-salt VALUE | del route NAME | del routes | show routes\n"
            "  set upstream VARIANT HOST:PORT [HOST:PORT ...] | del upstream VARIANT | show upstreams\n"
            "  show stats [json] | reset stats | status\n"
            "  CONDITION: method M[,M...] | path exact|prefix|regex VALUE | header NAME exact|prefix|regex VALUE\n"
            "\n"
            "exit status: 0 ok, 1 the request was refused (error on stderr), 2 no exchange with the daemon\n",
            prog);
}

static int needs_quotes(const char *s)
{
    return *s == '\0' || strpbrk(s, " \t\"\\") != NULL;
}

/* Appends <s> to <out> as one control-protocol token. <out> must have room for 2 * strlen(s) + 2 bytes. */
static size_t put_token(char *out, const char *s)
{
    size_t n = 0;

    if (!needs_quotes(s)) {
        n = strlen(s);
        memcpy(out, s, n);
        return n;
    }
    out[n++] = '"';
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s;
    }
    out[n++] = '"';
    return n;
}

/* Builds "<verb> TOK TOK...\n" from <args> (verb may be NULL). Returns a malloc'ed NUL-terminated line, or NULL
 * with a message printed when an argument cannot be sent. */
static char *build_line(const char *verb, char *const *args, int nargs, size_t *outlen)
{
    size_t cap = 2, n = 0;
    char *line;
    int i;

    if (verb != NULL)
        cap += strlen(verb) + 1;
    for (i = 0; i < nargs; i++) {
        /* the protocol has no escape for line breaks: one inside a token would start a second request */
        if (strpbrk(args[i], "\r\n") != NULL) {
            fprintf(stderr, "%s: an argument contains a line break, which the control protocol cannot carry\n", prog);
            return NULL;
        }
        cap += 2 * strlen(args[i]) + 3;
    }
    line = malloc(cap);
    if (line == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return NULL;
    }
    if (verb != NULL) {
        n = strlen(verb);
        memcpy(line, verb, n);
    }
    for (i = 0; i < nargs; i++) {
        if (n > 0)
            line[n++] = ' ';
        n += put_token(line + n, args[i]);
    }
    line[n++] = '\n';
    line[n] = '\0';
    *outlen = n;
    return line;
}

static int set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S, .tv_usec = 0};

    /* on Linux SO_SNDTIMEO also bounds a blocking connect() */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        return -1;
    return 0;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "%s: cannot connect to %s: path too long\n", prog, path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || set_timeouts(fd) != 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(const char *url)
{
    const char *hp = url + strlen(TCP_SCHEME); /* tls:// has the same length */
    struct addrinfo hints, *res = NULL, *ai;
    px_hostport_t target;
    char port[8];
    int fd = -1, rc, saved = 0;

    if (px_parse_hostport(hp, &target) != 0) {
        fprintf(stderr, "%s: -s %s: expected %.6sHOST:PORT\n", prog, url, url);
        return -1;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)target.port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(target.host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, hp, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && set_timeouts(fd) == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        saved = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        /* a connect() cut short by SO_SNDTIMEO reports EINPROGRESS, which reads badly */
        fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, hp,
                saved == EINPROGRESS ? "timed out" : strerror(saved));
        return -1;
    }
    return fd;
}

/* Why the last TLS call failed, for a message: the verification result when there is one. */
static const char *tls_why(void)
{
    long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_peek_last_error();
    const char *r;

    if (v != X509_V_OK)
        return X509_verify_cert_error_string(v);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return "timed out";
    r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "connection closed";
}

/* Starts TLS on the connected <fd> to <url>'s host, verified against <ca> (NULL: the system store). */
static int start_tls(int fd, const char *url, const char *ca)
{
    px_hostport_t target;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    unsigned char addr[16];
    int is_ip;

    if (ctx == NULL || px_parse_hostport(url + strlen(TLS_SCHEME), &target) != 0)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL) : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        fprintf(stderr, "%s: --ca %s: %s\n", prog, ca != NULL ? ca : "(system)", tls_why());
        SSL_CTX_free(ctx);
        return -1;
    }
    if ((ssl = SSL_new(ctx)) == NULL)
        goto fail;
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    ctx = NULL;
    is_ip = inet_pton(AF_INET, target.host, addr) == 1 || inet_pton(AF_INET6, target.host, addr) == 1;
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), target.host) != 1
              : (SSL_set_tlsext_host_name(ssl, target.host) != 1 || SSL_set1_host(ssl, target.host) != 1))
        goto fail;
    if (SSL_set_fd(ssl, fd) != 1)
        goto fail;
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "%s: cannot connect to %s: TLS handshake failed: %s\n", prog, url, tls_why());
        return -1;
    }
    return 0;
fail:
    SSL_CTX_free(ctx);
    fprintf(stderr, "%s: cannot connect to %s: TLS setup failed: %s\n", prog, url, tls_why());
    return -1;
}

static ssize_t io_send(int fd, const char *p, size_t n)
{
    int w;

    if (ssl == NULL)
        return send(fd, p, n, MSG_NOSIGNAL);
    w = SSL_write(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    return w > 0 ? w : -1;
}

static ssize_t io_recv(int fd, char *p, size_t n, const char *where)
{
    int r, e;

    if (ssl == NULL)
        return recv(fd, p, n, 0);
    r = SSL_read(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0)
        return r;
    e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
        return 0;
    if (e == SSL_ERROR_SYSCALL && errno != 0)
        return -1; /* errno says why */
    fprintf(stderr, "%s: reading from %s: %s\n", prog, where, tls_why());
    errno = EPROTO;
    return -2;
}

static int send_all(int fd, const char *p, size_t n, const char *where)
{
    while (n > 0) {
        ssize_t w;
        errno = 0;
        w = io_send(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "%s: sending to %s: %s\n", prog, where, errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Looks at the complete lines received so far; sets <r->end> once the empty line that ends a reply arrived. */
static void scan_reply(struct reply *r)
{
    char *nl;

    while (r->end == 0 && (nl = memchr(r->buf + r->scan, '\n', r->len - r->scan)) != NULL) {
        size_t start = r->scan, linelen = (size_t)(nl - (r->buf + start));

        if (linelen > 0 && r->buf[start + linelen - 1] == '\r')
            linelen--;
        r->scan = (size_t)(nl - r->buf) + 1;
        /* the first line is the status line even if empty; an empty line after it ends the reply */
        if (r->nlines++ > 0 && linelen == 0)
            r->end = r->scan;
    }
}

/* Reads one whole reply into <r>, which must start zeroed or be reset. Returns 0, or -1 with a message. */
static int read_reply(int fd, struct reply *r, const char *where)
{
    r->len = r->end = r->scan = 0;
    r->nlines = 0;
    while (r->end == 0) {
        ssize_t n;

        if (r->cap - r->len < 4096) {
            size_t ncap = r->cap ? r->cap * 2 : 16384;
            char *nb;

            if (ncap > REPLY_MAX) {
                fprintf(stderr, "%s: reply from %s is larger than %u bytes\n", prog, where, REPLY_MAX);
                return -1;
            }
            nb = realloc(r->buf, ncap);
            if (nb == NULL) {
                fprintf(stderr, "%s: out of memory\n", prog);
                return -1;
            }
            r->buf = nb;
            r->cap = ncap;
        }
        errno = 0;
        n = io_recv(fd, r->buf + r->len, r->cap - r->len, where);
        if (n == -2)
            return -1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                fprintf(stderr, "%s: no reply from %s within %ds\n", prog, where, IO_TIMEOUT_S);
            else
                fprintf(stderr, "%s: reading from %s: %s\n", prog, where, strerror(errno));
            return -1;
        }
        if (n == 0) {
            fprintf(stderr, "%s: %s closed the connection before the end of the reply\n", prog, where);
            return -1;
        }
        r->len += (size_t)n;
        scan_reply(r);
    }
    return 0;
}

/* Returns the length of the line at <p> (bounded by <lim>) without its "\n" or "\r\n"; <*next> gets the start of
 * the following line. */
static size_t line_at(const char *p, const char *lim, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(lim - p));
    size_t n = (size_t)(nl - p);

    *next = nl + 1;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    return n;
}

/* Returns 1 when the status line says ok, 0 when it is an error (stored in <*msg>/<*msglen>), -1 otherwise. */
static int status_of(const struct reply *r, const char **msg, size_t *msglen)
{
    const char *next;
    size_t n = line_at(r->buf, r->buf + r->end, &next);

    *msg = r->buf;
    *msglen = n;
    if (n == 2 && memcmp(r->buf, "ok", 2) == 0)
        return 1;
    if (n >= 6 && memcmp(r->buf, "error:", 6) == 0)
        return 0;
    return -1;
}

static int read_token_file(const char *path, char *tok, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "%s: -k %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    n = fread(tok, 1, size, f);
    if (ferror(f)) {
        fprintf(stderr, "%s: -k %s: %s\n", prog, path, strerror(errno));
        fclose(f);
        return -1;
    }
    fclose(f);
    if (n == size) {
        fprintf(stderr, "%s: -k %s: token longer than %zu bytes\n", prog, path, size - 1);
        return -1;
    }
    while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r'))
        n--;
    tok[n] = '\0';
    if (n == 0 || strlen(tok) != n) {
        fprintf(stderr, "%s: -k %s: %s\n", prog, path, n == 0 ? "empty token" : "token contains a NUL byte");
        return -1;
    }
    return 0;
}

/* Sends <authline> ("auth TOKEN\n") and expects ok; a refusal counts as failing to connect (nothing was requested
 * yet). */
static int authenticate(int fd, const char *where, const char *authline, size_t len, struct reply *r)
{
    const char *msg;
    size_t msglen;

    if (send_all(fd, authline, len, where) != 0 || read_reply(fd, r, where) != 0)
        return -1;
    if (status_of(r, &msg, &msglen) != 1) {
        fprintf(stderr, "%s: %s refused authentication: %.*s\n", prog, where, (int)msglen, msg);
        return -1;
    }
    return 0;
}

/* Reads the token from <tokfile> and builds the "auth TOKEN" line. Returns it malloc'ed, or NULL with a message. */
static char *auth_line(const char *tokfile, size_t *len)
{
    char tok[TOKEN_MAX + 1], *line, *args[1] = {tok};

    if (read_token_file(tokfile, tok, sizeof(tok)) != 0)
        return NULL;
    line = build_line("auth", args, 1, len);
    memset(tok, 0, sizeof(tok));
    return line;
}

/* Prints the data lines of <r> to stdout. Returns 0, or -1 when stdout failed. */
static int print_data(const struct reply *r)
{
    const char *p, *lim = r->buf + r->end;

    line_at(r->buf, lim, &p); /* skip the status line */
    while (p < lim) {
        const char *next;
        size_t n = line_at(p, lim, &next);

        if (n == 0 && next == lim)
            break;
        fwrite(p, 1, n, stdout);
        putchar('\n');
        p = next;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: writing to stdout: %s\n", prog, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *sock = DEFAULT_SOCKET, *tokfile = NULL, *ca = NULL, *msg;
    struct reply r = {0};
    char *line = NULL, *auth = NULL;
    size_t len, authlen = 0, msglen;
    int i, fd = -1, tcp, tls, rc = EXIT_FAIL, st;

    for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("weirctl %s\n", WEIR_VERSION);
            return EXIT_OK;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "-k") == 0 || strcmp(a, "--ca") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option %s needs a value (see %s -h)\n", prog, a, prog);
                return EXIT_FAIL;
            }
            if (a[1] == 's')
                sock = argv[++i];
            else if (a[1] == 'k')
                tokfile = argv[++i];
            else
                ca = argv[++i];
        } else {
            fprintf(stderr, "%s: unknown option '%s' (see %s -h)\n", prog, a, prog);
            return EXIT_FAIL;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "%s: missing REQUEST (see %s -h)\n", prog, prog);
        return EXIT_FAIL;
    }
    tls = strncmp(sock, TLS_SCHEME, strlen(TLS_SCHEME)) == 0;
    tcp = tls || strncmp(sock, TCP_SCHEME, strlen(TCP_SCHEME)) == 0;
    if (tcp && tokfile == NULL) {
        fprintf(stderr, "%s: -s %s needs -k TOKENFILE\n", prog, sock);
        return EXIT_FAIL;
    }
    if (!tcp && tokfile != NULL) {
        fprintf(stderr, "%s: -k applies only to -s tcp://HOST:PORT or tls://HOST:PORT\n", prog);
        return EXIT_FAIL;
    }
    if (!tls && ca != NULL) {
        fprintf(stderr, "%s: --ca applies only to -s tls://HOST:PORT\n", prog);
        return EXIT_FAIL;
    }
    line = build_line(NULL, argv + i, argc - i, &len);
    if (line == NULL)
        goto out;
    /* the token file is read before connecting so a bad one fails without touching the network */
    if (tcp && (auth = auth_line(tokfile, &authlen)) == NULL)
        goto out;

    fd = tcp ? connect_tcp(sock) : connect_unix(sock);
    if (fd < 0 || (tls && start_tls(fd, sock, ca) != 0))
        goto out;
    if (tcp && authenticate(fd, sock, auth, authlen, &r) != 0)
        goto out;
    if (send_all(fd, line, len, sock) != 0 || read_reply(fd, &r, sock) != 0)
        goto out;
    st = status_of(&r, &msg, &msglen);
    if (st < 0) {
        fprintf(stderr, "%s: unexpected reply from %s: '%.*s'\n", prog, sock, (int)msglen, msg);
        goto out;
    }
    if (print_data(&r) != 0)
        goto out;
    if (st == 0) {
        fprintf(stderr, "%.*s\n", (int)msglen, msg);
        rc = EXIT_REPLY_ERROR;
    } else {
        rc = EXIT_OK;
    }
out:
    if (ssl != NULL) {
        SSL_shutdown(ssl); /* close_notify: the server sees a clean end, not a truncation */
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
    if (auth != NULL) {
        memset(auth, 0, authlen);
        free(auth);
    }
    free(r.buf);
    free(line);
    return rc;
}
