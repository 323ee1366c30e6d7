#include "conf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ini.h>
#include <json-c/json.h>

#include "util.h"

/*
 * How lines reach inih.  Our own lexer (conf_lex) sees every raw line
 * first and rejects what STYLE.md section 9 forbids, so that the result
 * does not depend on how inih was built (Debian's libinih 55 allows
 * continuation lines, ';' inline comments, ';' comment lines and cuts lines
 * at 200 bytes):
 *  - more than CONF_LINE_MAX bytes, control characters, a line that starts
 *    with whitespace (a continuation line to inih), ';' comment lines, a
 *    missing '=', a malformed key or section header, and an inline comment
 *    (a '#' or ';' at the start of a value or after whitespace in it) are
 *    errors.  A '#' or ';' elsewhere in a value is an ordinary character.
 *  - '#' comment lines and blank lines reach inih as empty lines, so its
 *    line count stays ours.
 *  - section headers and key lines reach inih, cut to its buffer if need
 *    be.  A key is at most CONF_KEY_MAX bytes, so inih always sees all of
 *    it; the value is taken from our copy of the line, which is complete.
 * The lexer also tracks sections itself: inih does not report a section
 * that has no keys, and "[hook.x] without exec" must still be found.
 */

#define CONF_LINE_MAX 4096
#define CONF_KEY_MAX 64
#define CONF_KEYS_MAX 40	/* keys per section */
#define CONF_URL_MAX 2048
#define CONF_HOOK_NAME_MAX 32
#define CONF_FILE_MAX (1024 * 1024)
#define CONF_WHY_MAX 256

#define MS_PER_S 1000ull
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_MIN)
#define MS_PER_DAY (24 * MS_PER_H)

enum conf_type {
	CONF_T_STRING,		/* char *, owned */
	CONF_T_PATH,		/* char *, owned, absolute */
	CONF_T_URL,		/* char *, owned, https://host[:port][/path], no trailing '/' */
	CONF_T_UINT,		/* unsigned */
	CONF_T_U64,		/* uint64_t */
	CONF_T_BOOL,		/* bool */
	CONF_T_DURATION,	/* uint64_t milliseconds */
	CONF_T_SIZE,		/* uint64_t bytes */
	CONF_T_ENUM,		/* int (or unsigned), value from a name list */
	CONF_T_CUSTOM,		/* parse and print functions */
};

struct conf_name {
	const char *name;
	int value;
};

/* base is the struct conf, or the struct conf_hook for [hook.NAME] keys. */
typedef int (*conf_parse_fn)(const char *v, void *base, char *why, size_t why_size);
typedef void (*conf_print_fn)(FILE *f, const void *base);

struct conf_key {
	const char *key;
	enum conf_type type;
	size_t offset;			/* of the field in base */
	const char *def;		/* parsed like a value; NULL: none */
	const char *fallback;		/* parsed when def does not parse */
	uint64_t min;			/* numbers, durations (ms), sizes */
	uint64_t max;
	const struct conf_name *names;	/* CONF_T_ENUM, NULL-terminated */
	conf_parse_fn parse;		/* CONF_T_CUSTOM */
	conf_print_fn print;		/* CONF_T_CUSTOM */
	bool required;
};

struct conf_section {
	const char *name;		/* "hook" stands for [hook.NAME] */
	const struct conf_key *keys;
	size_t n_keys;
};

/* Indices into conf_sections and conf_ctx.seen_global. */
enum {
	CONF_SEC_VTPMD,
	CONF_SEC_POOL,
	CONF_SEC_ROTATE,
	CONF_SEC_RM,
	CONF_SEC_GLOBAL,	/* sections that are not [hook.NAME] */
};

/* Where a section and its keys were set; 0: not set. */
struct conf_seen {
	unsigned section;
	unsigned key[CONF_KEYS_MAX];
};

struct conf_ctx {
	const char *name;		/* for diagnostics */
	const char *buf;		/* not NUL-terminated */
	size_t len;
	size_t pos;
	unsigned lineno;		/* of the line last read */
	char key[CONF_KEY_MAX + 1];	/* of the key line last read */
	char value[CONF_LINE_MAX + 1];
	struct conf *conf;
	const struct conf_section *sec;	/* NULL before the first header */
	void *base;			/* the struct the section's keys fill */
	struct conf_seen *seen;		/* the section's entry below */
	struct conf_seen seen_global[CONF_SEC_GLOBAL];
	struct conf_seen seen_hook[CONF_MAX_HOOKS];
	int r;				/* first error */
	char *err;
	size_t err_size;
};

/* ---- value parsers ---- */

static const struct conf_name log_level_names[] = {
	{ "err", LOG_ERR },
	{ "warn", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
	{ NULL, 0 },
};

/* Values of enum meta_alg in pool/meta.h, which vtpmd/ must not include here. */
static const struct conf_name ak_names[] = {
	{ "none", 0 },		/* META_ALG_NONE */
	{ "rsa2048", 1 },	/* META_ALG_RSA2048 */
	{ "ecc-p256", 2 },	/* META_ALG_ECC_P256 */
	{ NULL, 0 },
};

static const struct conf_name phase_names[] = {
	{ "prepare", CONF_PHASE_PREPARE },
	{ "commit", CONF_PHASE_COMMIT },
	{ "both", CONF_PHASE_BOTH },
	{ NULL, 0 },
};

static const struct conf_name hook_type_names[] = {
	{ "exec", CONF_HOOK_EXEC },
	{ "webhook", CONF_HOOK_WEBHOOK },
	{ "keylime", CONF_HOOK_KEYLIME },
	{ NULL, 0 },
};

static const struct conf_name bool_names[] = {
	{ "yes", 1 }, { "true", 1 }, { "on", 1 }, { "1", 1 },
	{ "no", 0 }, { "false", 0 }, { "off", 0 }, { "0", 0 },
	{ NULL, 0 },
};

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static bool is_name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '-';
}

static bool is_name(const char *s, size_t len, size_t max)
{
	size_t i;

	if (len == 0 || len > max)
		return false;
	for (i = 0; i < len; i++) {
		if (!is_name_char(s[i]))
			return false;
	}

	return true;
}

/*
 * An unsigned number: decimal, or hexadecimal after "0x".  No sign, no
 * whitespace, no octal.  Returns 0, -EINVAL or -ERANGE.
 */
static int parse_u64(const char *v, uint64_t *ret_u)
{
	const char *digits = "0123456789";
	unsigned long long u;
	int base = 10;
	char *end;

	if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		digits = "0123456789abcdefABCDEF";
		base = 16;
		v += 2;
	}
	if (!v[0] || strspn(v, digits) != strlen(v))
		return -EINVAL;
	errno = 0;
	u = strtoull(v, &end, base);
	if (errno == ERANGE)
		return -ERANGE;
	if (errno || *end)
		return -EINVAL;

	*ret_u = u;
	return 0;
}

/* A decimal number followed by one of the units; "" is one of them. */
static int parse_scaled(const char *v, const struct conf_name *units, uint64_t *ret_u)
{
	size_t n = strspn(v, "0123456789");
	char num[32];
	uint64_t u;
	size_t i;
	int r;

	if (n == 0 || n >= sizeof(num))
		return n == 0 ? -EINVAL : -ERANGE;
	memcpy(num, v, n);
	num[n] = '\0';
	r = parse_u64(num, &u);
	if (r < 0)
		return r;

	for (i = 0; units[i].name; i++) {
		uint64_t mult = (uint64_t)units[i].value;

		if (strcmp(v + n, units[i].name) != 0)
			continue;
		if (mult && u > UINT64_MAX / mult)
			return -ERANGE;
		*ret_u = u * mult;
		return 0;
	}

	return -EINVAL;
}

/* Durations in milliseconds; a bare number is seconds. */
static const struct conf_name duration_units[] = {
	{ "ms", 1 },
	{ "", (int)MS_PER_S },
	{ "s", (int)MS_PER_S },
	{ "m", (int)MS_PER_MIN },
	{ "h", (int)MS_PER_H },
	{ "d", (int)MS_PER_DAY },
	{ NULL, 0 },
};

static const struct conf_name size_units[] = {
	{ "", 1 },
	{ "k", 1 << 10 },
	{ "K", 1 << 10 },
	{ "M", 1 << 20 },
	{ "G", 1 << 30 },
	{ NULL, 0 },
};

/*
 * Parse a duration: a decimal number and a unit, ms, s, m, h or d, with no
 * space between; a bare number is seconds.  Returns 0, -EINVAL or -ERANGE;
 * *ret_ms is written only on success.  Any thread.
 */
int conf_parse_duration(const char *s, uint64_t *ret_ms)
{
	return parse_scaled(s, duration_units, ret_ms);
}

/*
 * Parse a size: a decimal number of bytes, optionally followed by k (or K),
 * M or G, powers of 1024.  Returns 0, -EINVAL or -ERANGE; *ret_bytes is
 * written only on success.  Any thread.
 */
int conf_parse_size(const char *s, uint64_t *ret_bytes)
{
	return parse_scaled(s, size_units, ret_bytes);
}

static void format_scaled(char *buf, size_t size, uint64_t u, const struct conf_name *units)
{
	const struct conf_name *best = NULL;
	size_t i;

	for (i = 0; units[i].name; i++) {
		uint64_t mult = (uint64_t)units[i].value;

		if (u != 0 && u % mult == 0 && (!best || mult > (uint64_t)best->value))
			best = &units[i];
	}
	if (!best)
		snprintf(buf, size, "%llu", (unsigned long long)u);
	else
		snprintf(buf, size, "%llu%s", (unsigned long long)(u / (uint64_t)best->value),
			 best->name);
}

static void format_duration(char *buf, size_t size, uint64_t ms)
{
	/* "ms" first, so that 0 and odd values keep an explicit unit. */
	if (ms == 0)
		snprintf(buf, size, "0");
	else if (ms % MS_PER_S)
		snprintf(buf, size, "%llums", (unsigned long long)ms);
	else
		format_scaled(buf, size, ms, duration_units + 2);
}

static int lookup_name(const struct conf_name *names, const char *v, int *ret_value)
{
	size_t i;

	for (i = 0; names[i].name; i++) {
		if (strcasecmp(v, names[i].name) == 0) {
			*ret_value = names[i].value;
			return 0;
		}
	}

	return -EINVAL;
}

static const char *name_of(const struct conf_name *names, int value)
{
	size_t i;

	for (i = 0; names[i].name; i++) {
		if (names[i].value == value)
			return names[i].name;
	}

	return "?";
}

static void why_names(char *why, size_t n, const struct conf_name *names)
{
	size_t used;
	size_t i;

	snprintf(why, n, "expected one of:");
	for (i = 0; names[i].name; i++) {
		used = strlen(why);
		snprintf(why + used, n - used, " %s", names[i].name);
	}
}

static int set_string(char **field, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return -ENOMEM;
	free(*field);
	*field = s;

	return 0;
}

static int parse_number(const struct conf_key *k, const char *v, uint64_t *ret_u,
			char *why, size_t n)
{
	char lo[32];
	char hi[32];
	uint64_t u;
	int r;

	if (k->type == CONF_T_DURATION)
		r = conf_parse_duration(v, &u);
	else if (k->type == CONF_T_SIZE)
		r = conf_parse_size(v, &u);
	else
		r = parse_u64(v, &u);
	if (r == -EINVAL) {
		snprintf(why, n, "invalid %s '%.64s'", k->type == CONF_T_DURATION ? "duration" :
			 k->type == CONF_T_SIZE ? "size" : "unsigned number", v);
		return r;
	}
	if (r == 0 && u >= k->min && u <= k->max) {
		*ret_u = u;
		return 0;
	}

	if (k->type == CONF_T_DURATION) {
		format_duration(lo, sizeof(lo), k->min);
		format_duration(hi, sizeof(hi), k->max);
	} else {
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)k->min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)k->max);
	}
	snprintf(why, n, "'%.64s' is out of range (%s to %s)", v, lo, hi);
	return -ERANGE;
}

/* Whether part is absent from the parsed URL u. */
static bool url_lacks(CURLU *u, CURLUPart part)
{
	char *p = NULL;
	CURLUcode uc;

	uc = curl_url_get(u, part, &p, 0);
	curl_free(p);

	return uc != CURLUE_OK;
}

/*
 * An https URL with a host and no user info or fragment, as libcurl
 * parses it (so a port out of range is an error here, not at the first
 * delivery), and without spaces, quotes or control characters; one
 * trailing '/' is dropped so that paths can be appended.  Plain http is
 * refused: no key allows it.
 */
static int parse_url(const char *v, char **field, char *why, size_t n)
{
	const char *host = v + strlen("https://");
	size_t len = strlen(v);
	char *port = NULL;
	bool bad = true;
	CURLUcode uc;
	CURLU *u;
	char *s;

	if (strncasecmp(v, "https://", 8) != 0) {
		snprintf(why, n, "'%.64s' is not an https:// URL", v);
		return -EINVAL;
	}
	if (len >= CONF_URL_MAX || strpbrk(v, " \t\"<>\\^`{|}")) {
		snprintf(why, n, "invalid URL (no spaces or quotes; at most %d bytes)",
			 CONF_URL_MAX - 1);
		return -EINVAL;
	}
	u = curl_url();
	if (!u)
		return -ENOMEM;
	uc = curl_url_set(u, CURLUPART_URL, v, 0);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		curl_url_cleanup(u);
		return -ENOMEM;
	}
	if (uc == CURLUE_OK && (strcspn(host, "/?") == 0 || url_lacks(u, CURLUPART_HOST)))
		uc = CURLUE_NO_HOST;	/* libcurl 7.88 takes "https:///x" as host x */
	if (uc == CURLUE_OK)
		(void)curl_url_get(u, CURLUPART_PORT, &port, 0);
	if (uc != CURLUE_OK)
		snprintf(why, n, "invalid URL: %s", curl_url_strerror(uc));
	else if (port && strtoul(port, NULL, 10) == 0)
		snprintf(why, n, "invalid URL: port 0");
	else if (!url_lacks(u, CURLUPART_USER) || !url_lacks(u, CURLUPART_PASSWORD))
		snprintf(why, n, "invalid URL: user info is not allowed (use token_file or tls_cert)");
	else if (!url_lacks(u, CURLUPART_FRAGMENT) || strchr(v, '#'))
		snprintf(why, n, "invalid URL: a fragment is not allowed");
	else
		bad = false;
	curl_free(port);
	curl_url_cleanup(u);
	if (bad)
		return -EINVAL;

	s = strdup(v);
	if (!s)
		return -ENOMEM;
	if (len > 8 + strcspn(host, "/?") && s[len - 1] == '/')
		s[len - 1] = '\0';
	free(*field);
	*field = s;

	return 0;
}

/* Parse v into the field k describes; on failure, why says what is wrong. */
static int parse_value(const struct conf_key *k, const char *v, void *base, char *why, size_t n)
{
	void *field = (char *)base + k->offset;
	uint64_t u;
	int i;
	int r;

	switch (k->type) {
	case CONF_T_PATH:
		if (v[0] != '/' || strlen(v) >= PATH_MAX) {
			snprintf(why, n, "'%.64s' is not an absolute path", v);
			return -EINVAL;
		}
		return set_string(field, v);
	case CONF_T_STRING:
		return set_string(field, v);
	case CONF_T_URL:
		return parse_url(v, field, why, n);
	case CONF_T_BOOL:
	case CONF_T_ENUM:
		r = lookup_name(k->type == CONF_T_BOOL ? bool_names : k->names, v, &i);
		if (r < 0) {
			why_names(why, n, k->type == CONF_T_BOOL ? bool_names : k->names);
			return r;
		}
		if (k->type == CONF_T_BOOL)
			*(bool *)field = i;
		else
			*(int *)field = i;
		return 0;
	case CONF_T_CUSTOM:
		return k->parse(v, base, why, n);
	default:
		r = parse_number(k, v, &u, why, n);
		if (r < 0)
			return r;
		if (k->type == CONF_T_UINT)
			*(unsigned *)field = (unsigned)u;
		else
			*(uint64_t *)field = u;
		return 0;
	}
}

/* ---- custom keys ---- */

static int parse_id(const char *v, const char *what, uint32_t *ret_id, char *why, size_t n)
{
	uint64_t u;

	if (v[0] < '0' || v[0] > '9')
		return -ENOENT;		/* a name */
	if (parse_u64(v, &u) < 0 || u >= UINT32_MAX) {
		snprintf(why, n, "invalid %s id '%.64s'", what, v);
		return -EINVAL;
	}

	*ret_id = (uint32_t)u;
	return 0;
}

static int parse_owner(const char *v, void *base, char *why, size_t n)
{
	struct conf *c = base;
	struct passwd pw;
	struct passwd *res;
	char buf[16384];
	uint32_t id;
	int r;

	r = parse_id(v, "user", &id, why, n);
	if (r != -ENOENT) {
		if (r == 0)
			c->dev_uid = id;
		return r;
	}
	r = getpwnam_r(v, &pw, buf, sizeof(buf), &res);
	if (r != 0) {
		snprintf(why, n, "cannot look up user '%.64s': %s", v, strerror(r));
		return -r;
	}
	if (!res) {
		snprintf(why, n, "unknown user '%.64s'", v);
		return -EINVAL;
	}

	c->dev_uid = pw.pw_uid;
	return 0;
}

static int parse_group(const char *v, void *base, char *why, size_t n)
{
	struct conf *c = base;
	struct group gr;
	struct group *res;
	char buf[16384];
	uint32_t id;
	int r;

	r = parse_id(v, "group", &id, why, n);
	if (r != -ENOENT) {
		if (r == 0)
			c->dev_gid = id;
		return r;
	}
	r = getgrnam_r(v, &gr, buf, sizeof(buf), &res);
	if (r != 0) {
		snprintf(why, n, "cannot look up group '%.64s': %s", v, strerror(r));
		return -r;
	}
	if (!res) {
		snprintf(why, n, "unknown group '%.64s'", v);
		return -EINVAL;
	}

	c->dev_gid = gr.gr_gid;
	return 0;
}

/* A user or group name that reads back as itself, not as a number. */
static bool id_name_prints(const char *name)
{
	size_t len = strlen(name);

	return is_name(name, len, 64) && strspn(name, "0123456789") != len;
}

/* A user by name when it has one that reads back as uid, else by number. */
static void print_uid(FILE *f, uid_t uid)
{
	struct passwd pw;
	struct passwd *res = NULL;
	char buf[16384];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res && id_name_prints(pw.pw_name))
		fprintf(f, "%s", pw.pw_name);
	else
		fprintf(f, "%u", (unsigned)uid);
}

/* The same for a group. */
static void print_gid(FILE *f, gid_t gid)
{
	struct group gr;
	struct group *res = NULL;
	char buf[16384];

	if (getgrgid_r(gid, &gr, buf, sizeof(buf), &res) == 0 && res && id_name_prints(gr.gr_name))
		fprintf(f, "%s", gr.gr_name);
	else
		fprintf(f, "%u", (unsigned)gid);
}

static void print_owner(FILE *f, const void *base)
{
	print_uid(f, ((const struct conf *)base)->dev_uid);
}

static void print_group(FILE *f, const void *base)
{
	print_gid(f, ((const struct conf *)base)->dev_gid);
}

/* A hook's user, by name or number, with its primary group; "" for none. */
static int parse_hook_user(const char *v, void *base, char *why, size_t n)
{
	struct conf_hook *h = base;
	struct passwd pw;
	struct passwd *res;
	char buf[16384];
	uint32_t id;
	int r;

	if (!v[0]) {
		h->has_user = false;
		return 0;
	}
	r = parse_id(v, "user", &id, why, n);
	if (r == 0)
		r = -getpwuid_r(id, &pw, buf, sizeof(buf), &res);
	else if (r == -ENOENT)
		r = -getpwnam_r(v, &pw, buf, sizeof(buf), &res);
	else
		return r;
	if (r < 0) {
		snprintf(why, n, "cannot look up user '%.64s': %s", v, strerror(-r));
		return r;
	}
	if (!res) {
		snprintf(why, n, "unknown user '%.64s'", v);
		return -EINVAL;
	}
	h->has_user = true;
	h->user_uid = pw.pw_uid;
	h->user_gid = pw.pw_gid;

	return 0;
}

static void print_hook_user(FILE *f, const void *base)
{
	const struct conf_hook *h = base;

	if (h->has_user)
		print_uid(f, h->user_uid);
}

/* Permission bits in octal, with or without leading zeros. */
static int parse_mode(const char *v, void *base, char *why, size_t n)
{
	struct conf *c = base;
	unsigned long m;
	size_t len = strlen(v);

	if (len == 0 || len > 6 || strspn(v, "01234567") != len) {
		snprintf(why, n, "invalid octal mode '%.64s'", v);
		return -EINVAL;
	}
	m = strtoul(v, NULL, 8);
	if (m > 0777) {
		snprintf(why, n, "mode '%s' has bits beyond 0777", v);
		return -EINVAL;
	}

	c->dev_mode = (mode_t)m;
	return 0;
}

static void print_mode(FILE *f, const void *base)
{
	const struct conf *c = base;

	fprintf(f, "0%03o", (unsigned)c->dev_mode);
}

/* TPM 2.0 Part 2, 7.5: persistent object handles are 0x81xxxxxx. */
#define CONF_PERSISTENT_FIRST 0x81000000u
#define CONF_PERSISTENT_LAST 0x81FFFFFFu
/* TCG EK Credential Profile 2.0, 2.3.1: where the EKs are persisted. */
#define CONF_EK_RSA_HANDLE 0x81010001u
#define CONF_EK_ECC_HANDLE 0x81010002u

static int parse_ak_handle(const char *v, void *base, char *why, size_t n)
{
	struct conf *c = base;
	uint64_t u;

	if (parse_u64(v, &u) < 0) {
		snprintf(why, n, "invalid handle '%.64s'", v);
		return -EINVAL;
	}
	if (u < CONF_PERSISTENT_FIRST || u > CONF_PERSISTENT_LAST) {
		snprintf(why, n, "'%.64s' is not a persistent handle (0x81000000 to 0x81ffffff)",
			 v);
		return -ERANGE;
	}
	if (u == CONF_EK_RSA_HANDLE || u == CONF_EK_ECC_HANDLE) {
		snprintf(why, n, "0x%08llx is reserved for an EK", (unsigned long long)u);
		return -EINVAL;
	}

	c->ak_handle = (uint32_t)u;
	return 0;
}

static void print_ak_handle(FILE *f, const void *base)
{
	const struct conf *c = base;

	fprintf(f, "0x%08x", c->ak_handle);
}

/* One EK name of a comma-separated list, whitespace around it allowed. */
static int parse_ek_item(const char *s, size_t len, bool *rsa, bool *ecc, char *why, size_t n)
{
	bool *slot = NULL;

	while (len && is_blank(*s)) {
		s++;
		len--;
	}
	while (len && is_blank(s[len - 1]))
		len--;
	if (len == 7 && memcmp(s, "rsa2048", 7) == 0)
		slot = rsa;
	else if (len == 8 && memcmp(s, "ecc-p256", 8) == 0)
		slot = ecc;
	if (!slot) {
		snprintf(why, n, "unknown EK type '%.*s' (expected rsa2048, ecc-p256)",
			 (int)(len > 64 ? 64 : len), s);
		return -EINVAL;
	}
	if (*slot) {
		snprintf(why, n, "EK type '%.*s' listed twice", (int)len, s);
		return -EINVAL;
	}

	*slot = true;
	return 0;
}

static int parse_ek(const char *v, void *base, char *why, size_t n)
{
	struct conf *c = base;
	bool rsa = false;
	bool ecc = false;
	const char *comma;
	int r;

	if (!v[0]) {
		snprintf(why, n, "at least one EK type is needed (rsa2048, ecc-p256)");
		return -EINVAL;
	}
	for (;;) {
		comma = strchr(v, ',');
		r = parse_ek_item(v, comma ? (size_t)(comma - v) : strlen(v), &rsa, &ecc, why, n);
		if (r < 0)
			return r;
		if (!comma)
			break;
		v = comma + 1;
	}

	c->ek_rsa = rsa;
	c->ek_ecc = ecc;
	return 0;
}

static void print_ek(FILE *f, const void *base)
{
	const struct conf *c = base;

	fprintf(f, "%s%s%s", c->ek_rsa ? "rsa2048" : "", c->ek_rsa && c->ek_ecc ? "," : "",
		c->ek_ecc ? "ecc-p256" : "");
}

static void argv_free(char **argv)
{
	size_t i;

	if (!argv)
		return;
	for (i = 0; argv[i]; i++)
		free(argv[i]);
	free(argv);
}

/* Splitting an exec value into words. */
struct conf_split {
	char **argv;		/* CONF_MAX_ARGS + 1 slots */
	size_t argc;
	char *word;		/* the word being built; as long as the value */
	size_t len;
	bool in_word;
};

static int split_end_word(struct conf_split *s, char *why, size_t n)
{
	if (!s->in_word)
		return 0;
	if (s->argc == CONF_MAX_ARGS) {
		snprintf(why, n, "too many words (at most %d)", CONF_MAX_ARGS);
		return -EINVAL;
	}
	s->argv[s->argc] = strndup(s->word, s->len);
	if (!s->argv[s->argc])
		return -ENOMEM;

	s->argc++;
	s->len = 0;
	s->in_word = false;
	return 0;
}

/*
 * The exec quoting rules, applied without any shell:
 *  - words are separated by runs of spaces and tabs;
 *  - a double-quoted part keeps spaces and tabs; quoted and unquoted parts
 *    next to each other form one word, and "" alone is an empty word;
 *  - a backslash makes the next character literal, inside double quotes
 *    too: \" \\ \# \; and \' are how those characters are written;
 *  - an unquoted single quote is an error, so that a shell habit fails
 *    loudly instead of leaving quote characters in the arguments;
 *  - there is no variable, glob, tilde or command expansion.
 */
static int split_words(struct conf_split *s, const char *p, char *why, size_t n)
{
	bool quoted = false;
	int r;

	for (; *p; p++) {
		if (*p == '\\') {
			if (!p[1]) {
				snprintf(why, n, "backslash at the end");
				return -EINVAL;
			}
			s->word[s->len++] = *++p;
			s->in_word = true;
		} else if (*p == '"') {
			quoted = !quoted;
			s->in_word = true;
		} else if (quoted || !(is_blank(*p) || *p == '\'')) {
			s->word[s->len++] = *p;
			s->in_word = true;
		} else if (*p == '\'') {
			snprintf(why, n, "single quotes are not supported (use double quotes)");
			return -EINVAL;
		} else {
			r = split_end_word(s, why, n);
			if (r < 0)
				return r;
		}
	}
	if (quoted) {
		snprintf(why, n, "unterminated double quote");
		return -EINVAL;
	}

	return split_end_word(s, why, n);
}

static int parse_argv(const char *v, char ***field, char *why, size_t n)
{
	struct conf_split s = { 0 };
	int r;

	s.argv = calloc(CONF_MAX_ARGS + 1, sizeof(*s.argv));
	s.word = malloc(strlen(v) + 1);
	if (!s.argv || !s.word) {
		r = -ENOMEM;
		goto err_free;
	}
	r = split_words(&s, v, why, n);
	if (r < 0)
		goto err_free;
	r = -EINVAL;
	if (s.argc == 0) {
		snprintf(why, n, "no program given");
		goto err_free;
	}
	if (s.argv[0][0] != '/') {
		snprintf(why, n, "the program '%.64s' is not an absolute path", s.argv[0]);
		goto err_free;
	}

	free(s.word);
	argv_free(*field);
	*field = s.argv;
	return 0;

err_free:
	free(s.word);
	argv_free(s.argv);
	return r;
}

static int parse_exec(const char *v, void *base, char *why, size_t n)
{
	return parse_argv(v, &((struct conf_hook *)base)->argv, why, n);
}

static int parse_restart(const char *v, void *base, char *why, size_t n)
{
	return parse_argv(v, &((struct conf_hook *)base)->restart_argv, why, n);
}

static void print_word(FILE *f, const char *w)
{
	bool quote = !w[0] || strpbrk(w, " \t") != NULL;

	if (quote)
		fputc('"', f);
	for (; *w; w++) {
		if (strchr("\"\\#;'", *w))
			fputc('\\', f);
		fputc(*w, f);
	}
	if (quote)
		fputc('"', f);
}

static void print_argv(FILE *f, char *const *argv)
{
	size_t i;

	for (i = 0; argv && argv[i]; i++) {
		if (i)
			fputc(' ', f);
		print_word(f, argv[i]);
	}
}

static void print_exec(FILE *f, const void *base)
{
	print_argv(f, ((const struct conf_hook *)base)->argv);
}

static void print_restart(FILE *f, const void *base)
{
	print_argv(f, ((const struct conf_hook *)base)->restart_argv);
}

/* ---- the table ---- */

#define K_FIELD(key_, type_, field_) .key = key_, .type = type_, \
	.offset = offsetof(struct conf, field_)
#define K_HOOK(key_, type_, field_) .key = key_, .type = type_, \
	.offset = offsetof(struct conf_hook, field_)
#define K_CUSTOM(key_, parse_, print_) .key = key_, .type = CONF_T_CUSTOM, \
	.parse = parse_, .print = print_

static const struct conf_key vtpmd_keys[] = {
	{ K_FIELD("state_dir", CONF_T_PATH, state_dir), .required = true },
	{ K_FIELD("mountpoint", CONF_T_PATH, mountpoint), .required = true },
	{ K_FIELD("log_level", CONF_T_ENUM, log_level), .def = "info", .names = log_level_names },
	{ K_FIELD("allow_other", CONF_T_BOOL, allow_other), .def = "no" },
	{ K_CUSTOM("device_owner", parse_owner, print_owner), .def = "0" },
	{ K_CUSTOM("device_group", parse_group, print_group), .def = "tss", .fallback = "0" },
	{ K_CUSTOM("device_mode", parse_mode, print_mode), .def = "0660" },
};

static const struct conf_key pool_keys[] = {
	{ K_FIELD("size", CONF_T_UINT, pool_size), .def = "2", .min = 1, .max = 256 },
	{ K_CUSTOM("ek", parse_ek, print_ek), .def = "rsa2048,ecc-p256" },
	{ K_FIELD("ak", CONF_T_ENUM, ak_alg), .def = "ecc-p256", .names = ak_names },
	{ K_CUSTOM("ak_handle", parse_ak_handle, print_ak_handle), .def = "0x81008000" },
	{ K_FIELD("workers", CONF_T_UINT, workers), .def = "0", .min = 0, .max = 64 },
	{ K_FIELD("ca_cert", CONF_T_PATH, ca_cert) },
	{ K_FIELD("ca_key", CONF_T_PATH, ca_key) },
	{ K_FIELD("command_timeout", CONF_T_DURATION, command_timeout_ms), .def = "30s",
	  .min = 100, .max = MS_PER_DAY },
};

static const struct conf_key rotate_keys[] = {
	{ K_FIELD("session_watermark", CONF_T_UINT, session_watermark), .def = "8", .max = 63 },
	{ K_FIELD("object_watermark", CONF_T_UINT, object_watermark), .def = "0", .max = 3 },
	{ K_FIELD("lockout_margin", CONF_T_UINT, lockout_margin), .def = "1", .max = UINT_MAX },
	{ K_FIELD("max_quotes", CONF_T_U64, max_quotes), .def = "0", .max = UINT64_MAX },
	{ K_FIELD("max_commands", CONF_T_U64, max_commands), .def = "0", .max = UINT64_MAX },
	{ K_FIELD("max_age", CONF_T_DURATION, max_age_ms), .def = "0", .max = UINT64_MAX },
	{ K_FIELD("on_exhaustion", CONF_T_BOOL, on_exhaustion), .def = "yes" },
	{ K_FIELD("grace", CONF_T_DURATION, grace_ms), .def = "60s", .max = UINT64_MAX },
};

static const struct conf_key rm_keys[] = {
	{ K_FIELD("max_objects", CONF_T_UINT, rm_max_objects), .def = "16", .min = 1, .max = 256 },
	{ K_FIELD("max_sessions", CONF_T_UINT, rm_max_sessions), .def = "16", .min = 1, .max = 64 },
	{ K_FIELD("max_pending", CONF_T_SIZE, rm_max_pending), .def = "64k", .min = 4096,
	  .max = 16 << 20 },
	{ K_FIELD("max_opens", CONF_T_UINT, rm_max_opens), .def = "256", .min = 1, .max = 65536 },
};

static const struct conf_key hook_keys[] = {
	{ K_CUSTOM("exec", parse_exec, print_exec) },
	{ K_HOOK("phase", CONF_T_ENUM, phases), .def = "both", .names = phase_names },
	{ K_HOOK("timeout", CONF_T_DURATION, timeout_ms), .def = "30s", .min = 1,
	  .max = MS_PER_DAY },
	{ K_CUSTOM("user", parse_hook_user, print_hook_user), .def = "" },
	{ K_HOOK("type", CONF_T_ENUM, type), .names = hook_type_names },
	{ K_HOOK("url", CONF_T_URL, url) },
	{ K_HOOK("tls_ca", CONF_T_PATH, tls_ca) },
	{ K_HOOK("tls_cert", CONF_T_PATH, tls_cert) },
	{ K_HOOK("tls_key", CONF_T_PATH, tls_key) },
	{ K_HOOK("tls_verify", CONF_T_BOOL, tls_verify), .def = "yes" },
	{ K_HOOK("token_file", CONF_T_PATH, token_file) },
	{ K_HOOK("retries", CONF_T_UINT, retries), .def = "10", .max = 1000 },
	{ K_HOOK("retry_delay", CONF_T_DURATION, retry_min_ms), .def = "1s", .min = 10,
	  .max = MS_PER_H },
	{ K_HOOK("retry_max_delay", CONF_T_DURATION, retry_max_ms), .def = "60s", .min = 10,
	  .max = MS_PER_DAY },
	{ K_HOOK("verifier", CONF_T_URL, verifier) },
	{ K_HOOK("registrar", CONF_T_URL, registrar) },
	{ K_HOOK("api_version", CONF_T_STRING, api_version), .def = "2.6" },
	{ K_HOOK("agent_uuid", CONF_T_STRING, agent_uuid) },
	{ K_CUSTOM("agent_restart", parse_restart, print_restart) },
	{ K_HOOK("agent_ip", CONF_T_STRING, agent_ip) },
	{ K_HOOK("agent_port", CONF_T_UINT, agent_port), .def = "9002", .min = 1, .max = 65535 },
	{ K_HOOK("supported_version", CONF_T_STRING, supported_version), .def = "2.2" },
	{ K_HOOK("tpm_policy", CONF_T_STRING, tpm_policy), .def = "{}" },
	{ K_HOOK("accept_tpm_hash_algs", CONF_T_STRING, hash_algs), .def = "sha512,sha384,sha256" },
	{ K_HOOK("accept_tpm_encryption_algs", CONF_T_STRING, enc_algs), .def = "ecc,rsa" },
	{ K_HOOK("accept_tpm_signing_algs", CONF_T_STRING, sign_algs), .def = "ecschnorr,rsassa" },
	{ K_HOOK("runtime_policy_name", CONF_T_STRING, runtime_policy_name) },
	{ K_HOOK("mb_policy_name", CONF_T_STRING, mb_policy_name) },
};

static const struct conf_section conf_sections[] = {
	{ "vtpmd", vtpmd_keys, ARRAY_SIZE(vtpmd_keys) },
	{ "pool", pool_keys, ARRAY_SIZE(pool_keys) },
	{ "rotate", rotate_keys, ARRAY_SIZE(rotate_keys) },
	{ "rm", rm_keys, ARRAY_SIZE(rm_keys) },
	{ "hook", hook_keys, ARRAY_SIZE(hook_keys) },
};

#define CONF_SECTION_HOOK (&conf_sections[CONF_SEC_GLOBAL])

_Static_assert(ARRAY_SIZE(vtpmd_keys) <= CONF_KEYS_MAX, "too many keys");
_Static_assert(ARRAY_SIZE(pool_keys) <= CONF_KEYS_MAX, "too many keys");
_Static_assert(ARRAY_SIZE(rotate_keys) <= CONF_KEYS_MAX, "too many keys");
_Static_assert(ARRAY_SIZE(rm_keys) <= CONF_KEYS_MAX, "too many keys");
_Static_assert(ARRAY_SIZE(hook_keys) <= CONF_KEYS_MAX, "too many keys");
/* ENUM fields are written as int: phases is unsigned, of the same size. */
_Static_assert(sizeof(((struct conf_hook *)0)->phases) == sizeof(int), "phases size");

/* ---- defaults, free ---- */

static int apply_defaults(const struct conf_section *sec, void *base)
{
	char why[CONF_WHY_MAX];
	size_t i;
	int r;

	for (i = 0; i < sec->n_keys; i++) {
		const struct conf_key *k = &sec->keys[i];

		if (!k->def)
			continue;
		r = parse_value(k, k->def, base, why, sizeof(why));
		if (r < 0 && r != -ENOMEM && k->fallback)
			r = parse_value(k, k->fallback, base, why, sizeof(why));
		if (r == -ENOMEM)
			return r;
		/* Defaults are ours: one that does not parse is a bug. */
		assert(r == 0);
	}

	return 0;
}

static void free_strings(const struct conf_section *sec, void *base)
{
	size_t i;

	for (i = 0; i < sec->n_keys; i++) {
		const struct conf_key *k = &sec->keys[i];

		if (k->type == CONF_T_STRING || k->type == CONF_T_PATH || k->type == CONF_T_URL)
			free(*(char **)((char *)base + k->offset));
	}
}

/*
 * Free a configuration from conf_load_file() or conf_load_buffer(),
 * including its hooks.  NULL is a no-op.
 */
void conf_free(struct conf *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < CONF_SEC_GLOBAL; i++)
		free_strings(&conf_sections[i], c);
	for (i = 0; i < c->n_hooks; i++) {
		free_strings(CONF_SECTION_HOOK, &c->hooks[i]);
		free(c->hooks[i].name);
		argv_free(c->hooks[i].argv);
		argv_free(c->hooks[i].restart_argv);
		if (c->hooks[i].token)
			explicit_bzero(c->hooks[i].token, strlen(c->hooks[i].token));
		free(c->hooks[i].token);
	}
	free(c);
}

/* ---- diagnostics ---- */

/* Record the first error as "name:line: message"; returns the error. */
__attribute__((format(printf, 4, 5)))
static int conf_error(struct conf_ctx *ctx, int r, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ctx->r < 0)
		return ctx->r;
	ctx->r = r;
	if (!ctx->err || ctx->err_size == 0)
		return r;

	n = snprintf(ctx->err, ctx->err_size, "%s:%u: ", ctx->name, line);
	if (n < 0 || (size_t)n >= ctx->err_size)
		return r;
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->err_size - (size_t)n, fmt, ap);
	va_end(ap);

	return r;
}

static size_t key_index(const struct conf_section *sec, const char *key)
{
	size_t i;

	for (i = 0; i < sec->n_keys; i++) {
		if (strcmp(sec->keys[i].key, key) == 0)
			return i;
	}

	return SIZE_MAX;
}

/* ---- sections ---- */

/* The line of key in the open [hook.NAME], or the section's line. */
static unsigned hook_line(const struct conf_ctx *ctx, const char *key)
{
	unsigned line = ctx->seen->key[key_index(CONF_SECTION_HOOK, key)];

	return line ? line : ctx->seen->section;
}

/* Keys that belong to one hook type only, and the types they belong to. */
static const struct {
	const char *key;
	unsigned types;		/* bits 1 << enum conf_hook_type */
} hook_key_types[] = {
	{ "exec", 1u << CONF_HOOK_EXEC },
	{ "url", 1u << CONF_HOOK_WEBHOOK },
	{ "token_file", 1u << CONF_HOOK_WEBHOOK },
	{ "tls_ca", 1u << CONF_HOOK_WEBHOOK | 1u << CONF_HOOK_KEYLIME },
	{ "tls_cert", 1u << CONF_HOOK_WEBHOOK | 1u << CONF_HOOK_KEYLIME },
	{ "tls_key", 1u << CONF_HOOK_WEBHOOK | 1u << CONF_HOOK_KEYLIME },
	{ "tls_verify", 1u << CONF_HOOK_WEBHOOK | 1u << CONF_HOOK_KEYLIME },
	{ "verifier", 1u << CONF_HOOK_KEYLIME },
	{ "registrar", 1u << CONF_HOOK_KEYLIME },
	{ "agent_uuid", 1u << CONF_HOOK_KEYLIME },
	{ "agent_restart", 1u << CONF_HOOK_KEYLIME },
	{ "api_version", 1u << CONF_HOOK_KEYLIME },
	{ "agent_ip", 1u << CONF_HOOK_KEYLIME },
	{ "agent_port", 1u << CONF_HOOK_KEYLIME },
	{ "supported_version", 1u << CONF_HOOK_KEYLIME },
	{ "tpm_policy", 1u << CONF_HOOK_KEYLIME },
	{ "accept_tpm_hash_algs", 1u << CONF_HOOK_KEYLIME },
	{ "accept_tpm_encryption_algs", 1u << CONF_HOOK_KEYLIME },
	{ "accept_tpm_signing_algs", 1u << CONF_HOOK_KEYLIME },
	{ "runtime_policy_name", 1u << CONF_HOOK_KEYLIME },
	{ "mb_policy_name", 1u << CONF_HOOK_KEYLIME },
};

/* Whether key (of [hook.NAME]) means anything for a hook of type. */
static bool hook_key_applies(const char *key, int type)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(hook_key_types); i++) {
		if (strcmp(hook_key_types[i].key, key) == 0)
			return hook_key_types[i].types & (1u << type);
	}

	return true;
}

/* The type, from "type" or inferred from exec or url; keys of other types are errors. */
static int hook_check_type(struct conf_ctx *ctx, struct conf_hook *h)
{
	static const char *const type_name[] = { "?", "exec", "webhook", "keylime" };
	size_t i;

	if (h->type == CONF_HOOK_AUTO && (h->argv || h->url))
		h->type = h->argv ? CONF_HOOK_EXEC : CONF_HOOK_WEBHOOK;
	/* Most hooks are programs: name the key they lack. */
	if (h->type == CONF_HOOK_AUTO)
		return conf_error(ctx, -EINVAL, ctx->seen->section, "[hook.%s] has no 'exec' key",
				  h->name);
	for (i = 0; i < ARRAY_SIZE(hook_key_types); i++) {
		unsigned line = ctx->seen->key[key_index(CONF_SECTION_HOOK, hook_key_types[i].key)];

		if (line && !(hook_key_types[i].types & (1u << h->type)))
			return conf_error(ctx, -EINVAL, line, "'%s' does not apply to hooks of type %s",
					  hook_key_types[i].key, type_name[h->type]);
	}

	return 0;
}

static int hook_need(struct conf_ctx *ctx, const struct conf_hook *h, const char *key,
		     const void *v)
{
	if (v)
		return 0;
	return conf_error(ctx, -EINVAL, ctx->seen->section, "[hook.%s] has no '%s' key", h->name,
			  key);
}

/*
 * The bearer token: a private file (no group or other permission bits)
 * owned by root or by us, one line of visible ASCII.  The token itself
 * never reaches an error message.
 */
static int hook_read_token(struct conf_ctx *ctx, struct conf_hook *h)
{
	unsigned line = hook_line(ctx, "token_file");
	char buf[CONF_TOKEN_MAX + 2];
	struct stat st;
	ssize_t len;
	int fd;

	fd = open(h->token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return conf_error(ctx, -EINVAL, line, "token_file '%s': %s", h->token_file,
				  strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) ||
	    (st.st_uid != 0 && st.st_uid != geteuid())) {
		(void)close(fd);
		return conf_error(ctx, -EINVAL, line,
				  "token_file '%s' must be a regular file owned by root or by vtpmd's user, mode 0600 or stricter",
				  h->token_file);
	}
	len = read(fd, buf, sizeof(buf) - 1);
	(void)close(fd);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len > 0 ? len : 0] = '\0';
	if (len <= 0 || len > CONF_TOKEN_MAX || strspn(buf, "!\"#$%&'()*+,-./0123456789:;<=>?@"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") != (size_t)len) {
		explicit_bzero(buf, sizeof(buf));
		return conf_error(ctx, -EINVAL, line,
				  "token_file '%s' must hold one line of 1 to %d visible ASCII characters",
				  h->token_file, CONF_TOKEN_MAX);
	}
	h->token = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	if (!h->token)
		return conf_error(ctx, -ENOMEM, line, "out of memory");

	return 0;
}

static int hook_check_file(struct conf_ctx *ctx, const char *key, const char *path)
{
	struct stat st;

	if (!path)
		return 0;
	if (access(path, R_OK) < 0)
		return conf_error(ctx, -EINVAL, hook_line(ctx, key), "%s '%s': %s", key, path,
				  strerror(errno));
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return conf_error(ctx, -EINVAL, hook_line(ctx, key), "%s '%s' is not a regular file",
				  key, path);

	return 0;
}

/* TLS files readable, certificate and key given together. */
static int hook_check_tls(struct conf_ctx *ctx, const struct conf_hook *h)
{
	int r;

	if (!h->tls_cert != !h->tls_key)
		return conf_error(ctx, -EINVAL, hook_line(ctx, h->tls_cert ? "tls_cert" : "tls_key"),
				  "tls_cert and tls_key go together (set both or neither)");
	r = hook_check_file(ctx, "tls_ca", h->tls_ca);
	if (r == 0)
		r = hook_check_file(ctx, "tls_cert", h->tls_cert);
	if (r == 0)
		r = hook_check_file(ctx, "tls_key", h->tls_key);

	return r;
}

/* A comma-separated list of lowercase algorithm names. */
static bool is_alg_list(const char *v)
{
	size_t n;

	for (;;) {
		n = strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_");
		if (n == 0 || (v[n] != ',' && v[n] != '\0'))
			return false;
		if (!v[n])
			return true;
		v += n + 1;
	}
}

/* "MAJOR.MINOR", digits only. */
static bool is_version(const char *v)
{
	size_t a = strspn(v, "0123456789");

	return a > 0 && a < 4 && v[a] == '.' && strspn(v + a + 1, "0123456789") == strlen(v + a + 1) &&
	       v[a + 1] && strlen(v + a + 1) < 4;
}

static int hook_check_keylime(struct conf_ctx *ctx, const struct conf_hook *h)
{
	static const char *const lists[] = { "accept_tpm_hash_algs", "accept_tpm_encryption_algs",
					     "accept_tpm_signing_algs" };
	const char *const vals[] = { h->hash_algs, h->enc_algs, h->sign_algs };
	json_object *o;
	size_t i;
	int r;

	r = hook_need(ctx, h, "verifier", h->verifier);
	if (r == 0)
		r = hook_need(ctx, h, "registrar", h->registrar);
	if (r == 0)
		r = hook_need(ctx, h, "agent_uuid", h->agent_uuid);
	if (r == 0)
		r = hook_need(ctx, h, "agent_restart", h->restart_argv);
	if (r < 0)
		return r;
	if (strchr(h->verifier, '?') || strchr(h->registrar, '?'))
		return conf_error(ctx, -EINVAL, hook_line(ctx, strchr(h->verifier, '?') ?
				  "verifier" : "registrar"),
				  "verifier and registrar are base URLs, without a query");
	if (!is_name(h->agent_uuid, strlen(h->agent_uuid), 255))
		return conf_error(ctx, -EINVAL, hook_line(ctx, "agent_uuid"),
				  "agent_uuid: 1 to 255 of A-Z a-z 0-9 _ -");
	if (!is_version(h->api_version) || !is_version(h->supported_version))
		return conf_error(ctx, -EINVAL, hook_line(ctx, is_version(h->api_version) ?
				  "supported_version" : "api_version"),
				  "expected a version such as 2.6");
	for (i = 0; i < ARRAY_SIZE(lists); i++) {
		if (!is_alg_list(vals[i]))
			return conf_error(ctx, -EINVAL, hook_line(ctx, lists[i]),
					  "%s: expected a comma-separated list of algorithm names",
					  lists[i]);
	}
	o = json_tokener_parse(h->tpm_policy);
	r = json_object_is_type(o, json_type_object);
	json_object_put(o);
	if (!r)
		return conf_error(ctx, -EINVAL, hook_line(ctx, "tpm_policy"),
				  "tpm_policy: expected a JSON object");

	return 0;
}

/* Checks when a section ends: a hook's type and the keys it needs. */
static int section_close(struct conf_ctx *ctx)
{
	struct conf_hook *h = ctx->base;
	int r;

	if (ctx->sec != CONF_SECTION_HOOK)
		return 0;
	h->exec_line = ctx->seen->key[key_index(CONF_SECTION_HOOK, "exec")];
	h->restart_line = ctx->seen->key[key_index(CONF_SECTION_HOOK, "agent_restart")];
	r = hook_check_type(ctx, h);
	if (r == 0 && h->type == CONF_HOOK_KEYLIME)
		r = hook_check_keylime(ctx, h);
	if (r == 0 && h->type != CONF_HOOK_EXEC)
		r = hook_check_tls(ctx, h);
	if (r == 0 && h->token_file)
		r = hook_read_token(ctx, h);
	if (r == 0 && h->retry_max_ms < h->retry_min_ms)
		r = conf_error(ctx, -EINVAL, hook_line(ctx, "retry_max_delay"),
			       "retry_max_delay must not be shorter than retry_delay");

	return r;
}

static int hook_open(struct conf_ctx *ctx, const char *name, size_t len)
{
	struct conf *c = ctx->conf;
	struct conf_hook *h;
	size_t i;

	if (!is_name(name, len, CONF_HOOK_NAME_MAX))
		return conf_error(ctx, -EINVAL, ctx->lineno,
				  "invalid hook name '%.*s' (1 to %d of A-Z a-z 0-9 _ -)",
				  (int)(len > 64 ? 64 : len), name, CONF_HOOK_NAME_MAX);
	for (i = 0; i < c->n_hooks; i++) {
		if (strlen(c->hooks[i].name) == len && memcmp(c->hooks[i].name, name, len) == 0)
			return conf_error(ctx, -EINVAL, ctx->lineno,
					  "duplicate section [hook.%s] (first on line %u)",
					  c->hooks[i].name, ctx->seen_hook[i].section);
	}
	if (c->n_hooks == CONF_MAX_HOOKS)
		return conf_error(ctx, -EINVAL, ctx->lineno, "too many hooks (at most %d)",
				  CONF_MAX_HOOKS);

	h = &c->hooks[c->n_hooks];
	h->name = strndup(name, len);
	if (!h->name)
		return conf_error(ctx, -ENOMEM, ctx->lineno, "out of memory");
	c->n_hooks++;
	if (apply_defaults(CONF_SECTION_HOOK, h) < 0)
		return conf_error(ctx, -ENOMEM, ctx->lineno, "out of memory");
	ctx->sec = CONF_SECTION_HOOK;
	ctx->base = h;
	ctx->seen = &ctx->seen_hook[c->n_hooks - 1];
	ctx->seen->section = ctx->lineno;

	return 0;
}

/* A "[name]" line, trailing whitespace already gone. */
static int section_open(struct conf_ctx *ctx, const char *line, size_t len)
{
	const char *name = line + 1;
	size_t nlen = len - 2;
	size_t i;
	int r;

	if (len < 3 || line[len - 1] != ']' || memchr(name, ']', nlen) || memchr(name, '[', nlen))
		return conf_error(ctx, -EINVAL, ctx->lineno, "invalid section header");
	r = section_close(ctx);
	if (r < 0)
		return r;
	if (nlen >= 5 && memcmp(name, "hook.", 5) == 0)
		return hook_open(ctx, name + 5, nlen - 5);

	for (i = 0; i < ARRAY_SIZE(ctx->seen_global); i++) {
		if (strlen(conf_sections[i].name) == nlen &&
		    memcmp(conf_sections[i].name, name, nlen) == 0)
			break;
	}
	if (i == ARRAY_SIZE(ctx->seen_global))
		return conf_error(ctx, -EINVAL, ctx->lineno, "unknown section [%.*s]",
				  (int)(nlen > 64 ? 64 : nlen), name);
	if (ctx->seen_global[i].section)
		return conf_error(ctx, -EINVAL, ctx->lineno,
				  "duplicate section [%s] (first on line %u)",
				  conf_sections[i].name, ctx->seen_global[i].section);
	ctx->sec = &conf_sections[i];
	ctx->base = ctx->conf;
	ctx->seen = &ctx->seen_global[i];
	ctx->seen->section = ctx->lineno;

	return 0;
}

/* ---- lines ---- */

/* A "key = value" line: split it into ctx->key and ctx->value. */
static int lex_pair(struct conf_ctx *ctx, const char *line, size_t len)
{
	const char *eq = memchr(line, '=', len);
	const char *v;
	size_t klen;
	size_t i;

	if (!eq)
		return conf_error(ctx, -EINVAL, ctx->lineno, "expected 'key = value'");
	klen = (size_t)(eq - line);
	while (klen && is_blank(line[klen - 1]))
		klen--;
	if (!is_name(line, klen, CONF_KEY_MAX))
		return conf_error(ctx, -EINVAL, ctx->lineno, "invalid key name '%.*s'",
				  (int)(klen > 64 ? 64 : klen), line);

	v = eq + 1;
	while (v < line + len && is_blank(*v))
		v++;
	for (i = 0; v + i < line + len; i++) {
		if ((v[i] == '#' || v[i] == ';') && (i == 0 || is_blank(v[i - 1])))
			return conf_error(ctx, -EINVAL, ctx->lineno,
					  "inline comments are not supported (a '%c' starts the value or follows a space; put comments on their own line)",
					  v[i]);
	}
	memcpy(ctx->key, line, klen);
	ctx->key[klen] = '\0';
	memcpy(ctx->value, v, (size_t)(line + len - v));
	ctx->value[line + len - v] = '\0';

	return 0;
}

/*
 * Length of the UTF-8 sequence at s (at most n bytes), or 0 if it is not
 * well-formed: no overlong forms, no surrogates, nothing above U+10FFFF.
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80;
	unsigned char hi = 0xbf;
	size_t len;
	size_t i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}

	return len;
}

/* UTF-8 text without control characters other than tab. */
static int check_chars(struct conf_ctx *ctx, const char *line, size_t len)
{
	const unsigned char *s = (const unsigned char *)line;
	size_t i = 0;
	size_t n;

	while (i < len) {
		if (s[i] < 0x80) {
			if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
				return conf_error(ctx, -EINVAL, ctx->lineno,
						  "control character 0x%02x in line", s[i]);
			i++;
			continue;
		}
		n = utf8_len(s + i, len - i);
		if (!n)
			return conf_error(ctx, -EINVAL, ctx->lineno,
					  "invalid UTF-8 at byte %zu of the line", i + 1);
		i += n;
	}

	return 0;
}

/*
 * Check one raw line and decide what inih gets for it in out (of size
 * num): an empty line for blanks and comments, else the line, cut to fit.
 */
static int conf_lex(struct conf_ctx *ctx, const char *line, size_t len, char *out, size_t num)
{
	size_t skip = 0;
	int r;

	if (len > CONF_LINE_MAX)
		return conf_error(ctx, -EINVAL, ctx->lineno, "line too long (more than %d bytes)",
				  CONF_LINE_MAX);
	if (len && line[len - 1] == '\r')
		len--;
	r = check_chars(ctx, line, len);
	if (r < 0)
		return r;
	while (len && is_blank(line[len - 1]))
		len--;
	while (skip < len && is_blank(line[skip]))
		skip++;

	snprintf(out, num, "\n");
	if (skip == len || line[skip] == '#')
		return 0;
	if (skip)
		return conf_error(ctx, -EINVAL, ctx->lineno,
				  "line starts with whitespace (continuation lines are not supported)");
	if (line[0] == ';')
		return conf_error(ctx, -EINVAL, ctx->lineno, "comments start with '#', not ';'");
	if (line[0] == '[')
		r = section_open(ctx, line, len);
	else if (!ctx->sec)
		r = conf_error(ctx, -EINVAL, ctx->lineno, "key outside of any section");
	else
		r = lex_pair(ctx, line, len);
	if (r < 0)
		return r;

	/* A header fits (its name is short); a pair is rebuilt, value cut. */
	if (line[0] == '[')
		snprintf(out, num, "%.*s\n", (int)len, line);
	else
		snprintf(out, num, "%s=%.*s\n", ctx->key, (int)(num - strlen(ctx->key) - 3),
			 ctx->value);
	return 0;
}

/* inih's reader: hand it the next line of the buffer, checked. */
static char *conf_reader(char *str, int num, void *stream)
{
	struct conf_ctx *ctx = stream;
	const char *line;
	const char *nl;
	size_t len;

	assert(num >= 2);

	if (ctx->r < 0 || ctx->pos >= ctx->len)
		return NULL;
	line = ctx->buf + ctx->pos;
	nl = memchr(line, '\n', ctx->len - ctx->pos);
	len = nl ? (size_t)(nl - line) : ctx->len - ctx->pos;
	ctx->pos += len + (nl ? 1 : 0);
	ctx->lineno++;
	if (conf_lex(ctx, line, len, str, (size_t)num) < 0)
		return NULL;

	return str;
}

/* inih's handler: one key of the current section. */
#if INI_HANDLER_LINENO
/* Our line count is used either way: inih's equals it, one line per read. */
static int conf_handler(void *user, const char *section, const char *name, const char *value,
			__attribute__((unused)) int lineno)
#else
static int conf_handler(void *user, const char *section, const char *name, const char *value)
#endif
{
	struct conf_ctx *ctx = user;
	char why[CONF_WHY_MAX] = "";
	const struct conf_key *k;
	size_t i;
	int r;

	/* The lexer saw this line first: ctx->value is its complete copy. */
	(void)value;
	assert(ctx->sec && strcmp(name, ctx->key) == 0);

	if (strncmp(name, "x-", 2) == 0)
		return 1;
	i = key_index(ctx->sec, name);
	if (i == SIZE_MAX) {
		(void)conf_error(ctx, -EINVAL, ctx->lineno, "unknown key '%s' in [%s]", name,
				 section);
		return 0;
	}
	k = &ctx->sec->keys[i];
	if (ctx->seen->key[i]) {
		(void)conf_error(ctx, -EINVAL, ctx->lineno,
				 "duplicate key '%s' (first set on line %u)", name,
				 ctx->seen->key[i]);
		return 0;
	}
	ctx->seen->key[i] = ctx->lineno;

	r = parse_value(k, ctx->value, ctx->base, why, sizeof(why));
	if (r == -ENOMEM)
		snprintf(why, sizeof(why), "out of memory");
	if (r < 0) {
		(void)conf_error(ctx, r == -ENOMEM ? r : -EINVAL, ctx->lineno, "%s: %s", name, why);
		return 0;
	}

	return 1;
}

/* ---- whole-file checks ---- */

static unsigned key_line(const struct conf_ctx *ctx, size_t sec, const char *key)
{
	return ctx->seen_global[sec].key[key_index(&conf_sections[sec], key)];
}

static int check_required(struct conf_ctx *ctx)
{
	size_t s;
	size_t i;

	for (s = 0; s < ARRAY_SIZE(ctx->seen_global); s++) {
		const struct conf_section *sec = &conf_sections[s];
		unsigned line = ctx->seen_global[s].section;

		/* Not there at all: point at the end of the input. */
		if (!line)
			line = ctx->lineno ? ctx->lineno : 1;
		for (i = 0; i < sec->n_keys; i++) {
			if (sec->keys[i].required && !ctx->seen_global[s].key[i])
				return conf_error(ctx, -EINVAL, line,
						  "missing required key '%s' in [%s]",
						  sec->keys[i].key, sec->name);
		}
	}

	return 0;
}

/* Rules that tie keys together; each is reported at the offending key. */
static int check_cross(struct conf_ctx *ctx)
{
	const struct conf *c = ctx->conf;

	if (c->ca_cert && !c->ca_key)
		return conf_error(ctx, -EINVAL, key_line(ctx, CONF_SEC_POOL, "ca_cert"),
				  "ca_cert is set but ca_key is not (set both or neither)");
	if (c->ca_key && !c->ca_cert)
		return conf_error(ctx, -EINVAL, key_line(ctx, CONF_SEC_POOL, "ca_key"),
				  "ca_key is set but ca_cert is not (set both or neither)");
	if (strcmp(c->state_dir, c->mountpoint) == 0)
		return conf_error(ctx, -EINVAL, key_line(ctx, CONF_SEC_VTPMD, "mountpoint"),
				  "mountpoint must differ from state_dir");
	if (c->ca_cert && strcmp(c->ca_cert, c->ca_key) == 0)
		return conf_error(ctx, -EINVAL, key_line(ctx, CONF_SEC_POOL, "ca_key"),
				  "ca_key must differ from ca_cert");
	ctx->conf->state_dir_line = key_line(ctx, CONF_SEC_VTPMD, "state_dir");
	ctx->conf->ca_cert_line = key_line(ctx, CONF_SEC_POOL, "ca_cert");
	ctx->conf->ca_key_line = key_line(ctx, CONF_SEC_POOL, "ca_key");

	return 0;
}

/* ---- entry points ---- */

static int conf_parse(struct conf_ctx *ctx)
{
	size_t i;
	int r;

	ctx->conf = calloc(1, sizeof(*ctx->conf));
	if (!ctx->conf)
		return conf_error(ctx, -ENOMEM, 0, "out of memory");
	for (i = 0; i < CONF_SEC_GLOBAL; i++) {
		r = apply_defaults(&conf_sections[i], ctx->conf);
		if (r < 0)
			return conf_error(ctx, r, 0, "out of memory");
	}

	r = ini_parse_stream(conf_reader, ctx, conf_handler, ctx);
	if (ctx->r < 0)
		return ctx->r;
	if (r == -2)
		return conf_error(ctx, -ENOMEM, ctx->lineno, "out of memory");
	/* Unreachable unless inih and our lexer disagree about a line. */
	if (r != 0)
		return conf_error(ctx, -EINVAL, r > 0 ? (unsigned)r : ctx->lineno, "syntax error");

	return 0;
}

/*
 * Parse a configuration from buf (len bytes, need not be NUL-terminated).
 * name stands for the file in diagnostics ("<buffer>" if NULL).  On
 * success *ret is a new configuration the caller frees with conf_free();
 * on failure err (if not NULL) holds "name:line: message".  Returns 0,
 * -EINVAL for bad input or -ENOMEM; never logs.  Any thread; thread-safe.
 */
int conf_load_buffer(const char *name, const char *buf, size_t len,
		     struct conf **ret, char *err, size_t err_size)
{
	struct conf_ctx *ctx;
	int r;

	assert(ret);
	assert(buf || len == 0);

	if (err && err_size)
		err[0] = '\0';
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	*ctx = (struct conf_ctx){ .name = name ? name : "<buffer>", .buf = buf, .len = len,
				  .err = err, .err_size = err_size };
	/* A UTF-8 byte order mark is allowed at the very start. */
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		ctx->pos = 3;

	r = conf_parse(ctx);
	if (r == 0)
		r = section_close(ctx);
	if (r == 0)
		r = check_required(ctx);
	if (r == 0)
		r = check_cross(ctx);
	if (r < 0)
		conf_free(ctx->conf);
	else
		*ret = ctx->conf;
	free(ctx);
	return r;
}

static int read_all(int fd, char **ret_buf, size_t *ret_len)
{
	size_t size = 4096;
	size_t len = 0;
	char *buf = NULL;
	ssize_t got = 0;
	char *n;

	for (;;) {
		if (len == size || !buf) {
			if (buf)
				size *= 2;
			n = realloc(buf, size);
			if (!n) {
				free(buf);
				return -ENOMEM;
			}
			buf = n;
		}
		got = read(fd, buf + len, size - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		if (len > CONF_FILE_MAX) {
			free(buf);
			return -EFBIG;
		}
	}
	if (got < 0) {
		free(buf);
		return -errno;
	}

	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/*
 * Read and parse the configuration file at path, as conf_load_buffer()
 * does.  The file must be a regular file of at most 1 MiB.  Returns 0,
 * -ENOENT, -EACCES and the like from open(), -EISDIR for a directory,
 * -EINVAL for another kind of file or bad content, -EFBIG or -ENOMEM; err
 * (if not NULL) says why, prefixed with "path:" or "path:line:".  Never
 * logs.  Startup and the SIGHUP handler in main.c.
 */
int conf_load_file(const char *path, struct conf **ret, char *err, size_t err_size)
{
	char *buf = NULL;
	struct stat st;
	size_t len = 0;
	int fd;
	int r;

	assert(path);
	assert(ret);

	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		goto err;
	}
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (S_ISDIR(st.st_mode))
		r = -EISDIR;
	else if (!S_ISREG(st.st_mode))
		r = -EINVAL;
	else
		r = read_all(fd, &buf, &len);
	(void)close(fd);
	if (r < 0)
		goto err;

	r = conf_load_buffer(path, buf, len, ret, err, err_size);
	free(buf);
	return r;

err:
	if (err && err_size)
		snprintf(err, err_size, "%s: %s", path,
			 r == -EINVAL ? "not a regular file" :
			 r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
	return r;
}

static void dump_key(FILE *f, const struct conf_key *k, const void *base)
{
	const void *field = (const char *)base + k->offset;
	char buf[32];

	switch (k->type) {
	case CONF_T_STRING:
	case CONF_T_PATH:
	case CONF_T_URL:
		if (k->type == CONF_T_URL && *(char *const *)field &&
		    strchr(*(char *const *)field, '?'))
			/* A query string may carry a secret: it is never printed. */
			fprintf(f, "%s = %.*s?redacted\n", k->key,
				(int)strcspn(*(char *const *)field, "?"), *(char *const *)field);
		else if (*(char *const *)field)
			fprintf(f, "%s = %s\n", k->key, *(char *const *)field);
		else
			fprintf(f, "# %s is not set\n", k->key);
		return;
	case CONF_T_UINT:
		fprintf(f, "%s = %u\n", k->key, *(const unsigned *)field);
		return;
	case CONF_T_U64:
		fprintf(f, "%s = %llu\n", k->key, (unsigned long long)*(const uint64_t *)field);
		return;
	case CONF_T_BOOL:
		fprintf(f, "%s = %s\n", k->key, *(const bool *)field ? "yes" : "no");
		return;
	case CONF_T_DURATION:
	case CONF_T_SIZE:
		if (k->type == CONF_T_DURATION)
			format_duration(buf, sizeof(buf), *(const uint64_t *)field);
		else
			format_scaled(buf, sizeof(buf), *(const uint64_t *)field, size_units);
		fprintf(f, "%s = %s\n", k->key, buf);
		return;
	case CONF_T_ENUM:
		fprintf(f, "%s = %s\n", k->key, name_of(k->names, *(const int *)field));
		return;
	case CONF_T_CUSTOM:
		fprintf(f, "%s = ", k->key);
		k->print(f, base);
		fputc('\n', f);
		return;
	}
}

static void dump_section(FILE *f, const struct conf_section *sec, const void *base)
{
	size_t i;

	for (i = 0; i < sec->n_keys; i++)
		dump_key(f, &sec->keys[i], base);
}

/*
 * Print the effective configuration, defaults included, in the syntax
 * conf_load_buffer() reads back to an equal configuration; a hook shows
 * only the keys of its type.  Secrets are never printed: a token shows as
 * its token_file path.  Returns 0, or -EIO if writing to f
 * failed.  Used by "vtpmd -n".
 */
int conf_dump(const struct conf *c, FILE *f)
{
	size_t i;
	size_t k;

	assert(c);
	assert(f);

	fprintf(f, "# vtpmd effective configuration\n");
	for (i = 0; i < CONF_SEC_GLOBAL; i++) {
		fprintf(f, "%s[%s]\n", i ? "\n" : "", conf_sections[i].name);
		dump_section(f, &conf_sections[i], c);
	}
	for (i = 0; i < c->n_hooks; i++) {
		fprintf(f, "\n[hook.%s]\n", c->hooks[i].name);
		for (k = 0; k < CONF_SECTION_HOOK->n_keys; k++) {
			if (hook_key_applies(CONF_SECTION_HOOK->keys[k].key, c->hooks[i].type))
				dump_key(f, &CONF_SECTION_HOOK->keys[k], &c->hooks[i]);
		}
	}

	if (fflush(f) == EOF || ferror(f))
		return -EIO;
	return 0;
}
