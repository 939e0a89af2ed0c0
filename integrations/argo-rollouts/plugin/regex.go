package plugin

import (
	"fmt"
	"regexp"
	"strings"
)

// posixRegex rewrites an Argo regex (Go's RE2 syntax) as the POSIX extended regex weir compiles, where the two read
// the same pattern differently: RE2's shorthand classes become bracket expressions (\d -> [0-9]), backslash escapes
// inside brackets (literal in POSIX) are resolved, (?: becomes a plain group and lazy quantifiers become greedy ones
// (weir matches the whole value, so neither changes what matches). What has no exact POSIX equivalent (flags such as
// (?i), \b, \pL, \Q...\E, non-ASCII characters, whose RE2 unit is a UTF-8 character and POSIX's a byte) is refused,
// never misread.
func posixRegex(re string) (string, error) {
	if _, err := regexp.Compile(re); err != nil {
		return "", fmt.Errorf("not a valid RE2 regex: %w", err)
	}
	for i := 0; i < len(re); i++ {
		if re[i] >= 0x80 {
			return "", fmt.Errorf("non-ASCII characters are refused: RE2 reads UTF-8 characters, weir's POSIX regex bytes")
		}
	}
	var b strings.Builder
	for i := 0; i < len(re); {
		c := re[i]
		switch {
		case c == '\\':
			if i+1 == len(re) {
				return "", fmt.Errorf("trailing backslash")
			}
			e := re[i+1]
			i += 2
			if cls, ok := shorthand[e]; ok {
				b.WriteString("[" + cls + "]")
			} else if cls, ok := shorthand[e+'a'-'A']; ok && e >= 'A' && e <= 'Z' {
				b.WriteString("[^" + cls + "]")
			} else if lit, ok := escapeChar(e); ok {
				writeLiteral(&b, lit)
			} else {
				return "", fmt.Errorf("\\%c has no POSIX equivalent", e)
			}
		case c == '[':
			cls, n, err := bracket(re[i:])
			if err != nil {
				return "", err
			}
			b.WriteString(cls)
			i += n
		case c == '(' && strings.HasPrefix(re[i:], "(?:"):
			b.WriteByte('(')
			i += 3
		case c == '(' && strings.HasPrefix(re[i:], "(?"):
			return "", fmt.Errorf("(? flags and named groups have no POSIX equivalent")
		case c == '*' || c == '+' || c == '?':
			b.WriteByte(c)
			i++
			if i < len(re) && re[i] == '?' { // lazy: the same matches, anchored to the whole value
				i++
			}
		case c == '{':
			n := repetition(re[i:])
			if n == 0 {
				if strings.HasPrefix(re[i:], "{,") {
					return "", fmt.Errorf("{,N}: RE2 reads it literally, POSIX as {0,N}; write \\{ or {0,N}")
				}
				b.WriteString(`\{`) // RE2 reads a { that starts no repetition literally
				i++
				continue
			}
			b.WriteString(re[i : i+n])
			i += n
			if i < len(re) && re[i] == '?' {
				i++
			}
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// shorthand holds RE2's Perl classes as the contents of a POSIX bracket expression.
// RE2's \s also holds \n and \r, which no header value or path can hold (and no control request can carry).
var shorthand = map[byte]string{'d': "0-9", 's': "\t\f ", 'w': "0-9A-Za-z_"}

// escapeChar resolves an RE2 escape that stands for one character: punctuation stands for itself, and the C escapes.
func escapeChar(e byte) (byte, bool) {
	switch e {
	case 't':
		return '\t', true
	case 'f':
		return '\f', true
	case 'v':
		return '\v', true
	case 'a':
		return '\a', true
	}
	if e < 0x80 && !(e >= '0' && e <= '9') && !(e >= 'A' && e <= 'Z') && !(e >= 'a' && e <= 'z') && e > ' ' {
		return e, true
	}
	return 0, false
}

// writeLiteral writes character <c> so POSIX ERE reads it literally outside brackets.
func writeLiteral(b *strings.Builder, c byte) {
	if strings.IndexByte(`.[\()*+?{|^$`, c) >= 0 {
		b.WriteByte('\\')
	}
	b.WriteByte(c)
}

// repetition returns the length of the {N}, {N,} or {N,M} at the start of <s>, or 0 when there is none.
func repetition(s string) int {
	i := 1
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return 0
	}
	if i < len(s) && s[i] == ',' {
		i++
		digits()
	}
	if i < len(s) && s[i] == '}' {
		return i + 1
	}
	return 0
}

// bracket translates the RE2 bracket expression at the start of <s> and returns it and its length in <s>. RE2 reads
// backslash escapes inside brackets; POSIX reads a backslash there literally and places ], - and ^ by position, so
// the set is rebuilt: ] first, ^ not first, - last.
func bracket(s string) (string, int, error) {
	i := 1
	neg := false
	if i < len(s) && s[i] == '^' {
		neg = true
		i++
	}
	var set [128]bool
	var named []string // [:alpha:] and the like, which POSIX reads as RE2 does
	first := true
	char := func() (byte, bool, error) { // one (possibly escaped) character; ok false for a shorthand class
		c := s[i]
		if c != '\\' {
			i++
			return c, true, nil
		}
		if i+1 == len(s) {
			return 0, false, fmt.Errorf("unterminated [")
		}
		e := s[i+1]
		i += 2
		if cls, ok := shorthand[e]; ok {
			for j := 0; j < len(cls); j++ {
				if j+2 < len(cls) && cls[j+1] == '-' {
					for x := cls[j]; x <= cls[j+2]; x++ {
						set[x] = true
					}
					j += 2
				} else {
					set[cls[j]] = true
				}
			}
			return 0, false, nil
		}
		if lit, ok := escapeChar(e); ok {
			return lit, true, nil
		}
		return 0, false, fmt.Errorf("\\%c in a bracket expression has no POSIX equivalent", e)
	}
	for {
		if i >= len(s) {
			return "", 0, fmt.Errorf("unterminated [")
		}
		if s[i] == ']' && !first {
			i++
			break
		}
		first = false
		if strings.HasPrefix(s[i:], "[:") {
			end := strings.Index(s[i:], ":]")
			if end < 0 {
				return "", 0, fmt.Errorf("unterminated [:")
			}
			named = append(named, s[i:i+end+2])
			i += end + 2
			continue
		}
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= 'A' && s[i+1] <= 'Z' {
			return "", 0, fmt.Errorf("\\%c in a bracket expression has no POSIX equivalent", s[i+1])
		}
		lo, ok, err := char()
		if err != nil {
			return "", 0, err
		}
		if !ok {
			continue
		}
		hi := lo
		if i+1 < len(s) && s[i] == '-' && s[i+1] != ']' {
			i++
			h, ok, err := char()
			if err != nil {
				return "", 0, err
			}
			if !ok || h < lo {
				return "", 0, fmt.Errorf("bad range in a bracket expression")
			}
			hi = h
		}
		for x := int(lo); x <= int(hi); x++ {
			set[x] = true
		}
	}
	var b strings.Builder
	b.WriteByte('[')
	if neg {
		b.WriteByte('^')
	}
	if set[']'] {
		b.WriteByte(']')
	}
	for _, n := range named {
		b.WriteString(n)
	}
	caret := set['^']
	for x := 1; x < 128; x++ {
		if !set[x] || x == ']' || x == '-' || x == '^' {
			continue
		}
		y := x
		for y+1 < 128 && set[y+1] && y+1 != ']' && y+1 != '-' && y+1 != '^' {
			y++
		}
		switch {
		case y-x >= 2:
			fmt.Fprintf(&b, "%c-%c", x, y)
		case y-x == 1:
			fmt.Fprintf(&b, "%c%c", x, y)
		default:
			b.WriteByte(byte(x))
		}
		x = y
	}
	if caret {
		if !neg && b.Len() == 1 { // nothing else but perhaps -: ^ must not come first
			if set['-'] {
				return "[-^]", i, nil
			}
			return `\^`, i, nil
		}
		b.WriteByte('^')
	}
	if set['-'] {
		b.WriteByte('-')
	}
	b.WriteByte(']')
	return b.String(), i, nil
}
