/* Small strict parsers of the decision plane's vocabulary, shared by the config loader and the control parser. */
#ifndef RT_PARSE_H
#define RT_PARSE_H
#include <stddef.h>
#include <stdint.h>

#define RT_BP_MAX 10000u /* 100.00 % in basis points */
#define RT_VARIANT_NAME_MAX 32
#define RT_HOST_MAX 255 /* bytes of a host name or address in HOST:PORT */

/* Parses a percentage "0".."100" with at most two decimals ("0.05", "12.5", "100.00") into basis points.
 * <s> need not be NUL-terminated. Returns 0, or -1 with <*why> (a static string) set:
 * "bad number", "more than two decimals" or "out of range". <why> may be NULL. */
int rt_parse_bp(const char *s, size_t len, uint32_t *bp, const char **why);

/* Formats <bp> as a percentage with two decimals ("5.00", "0.05", "100.00") into <buf> (at least 8 bytes).
 * Returns the length written. */
size_t rt_format_bp(uint32_t bp, char *buf);

/* Returns 1 when <s> matches [a-z0-9][a-z0-9-]{0,31}, else 0. */
int rt_variant_name_valid(const char *s, size_t len);

/* Parses "HOST:PORT" (NUL-terminated <s>): a host name (letters, digits, '-', '_', '.'), a dotted-quad IPv4
 * address or a bracketed IPv6 one ("[::1]:8080"), and a port 1..65535. Stores the host without brackets in
 * <host> (RT_HOST_MAX + 1 bytes) and the port in <port>. Returns 0, or -1 with <*why> (a static string, e.g.
 * "missing port", "port out of range (1..65535)") set; <why> may be NULL. */
int rt_parse_hostport(const char *s, char *host, uint16_t *port, const char **why);

#endif
