#include "meta.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "fsutil.h"

#define META_VERSION 1
#define META_FILE_MAX (256 * 1024)

/* One bit per field of a key, to catch duplicates and missing fields. */
enum meta_field {
	META_F_ALG,
	META_F_HANDLE,
	META_F_TPM,
	META_F_NAME,
	META_F_SPKI,
	META_F_CERT,
	META_F_CERT_NV,
};

#define META_AK_FIELDS (1u << META_F_ALG | 1u << META_F_HANDLE | 1u << META_F_TPM | \
			1u << META_F_NAME | 1u << META_F_SPKI)
#define META_EK_FIELDS (META_AK_FIELDS | 1u << META_F_CERT | 1u << META_F_CERT_NV)

/* Top-level fields seen while parsing. */
#define META_SEEN_VERSION 0x1u
#define META_SEEN_ID 0x2u
#define META_SEEN_CREATED 0x4u

struct meta_parse {
	struct meta m;
	unsigned int seen;
	unsigned int ek_seen[META_MAX_EKS];
	unsigned int ak_seen;
};

static const char meta_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char *const meta_alg_names[] = {
	[META_ALG_NONE] = "none",
	[META_ALG_RSA2048] = "rsa2048",
	[META_ALG_ECC_P256] = "ecc-p256",
};

/*
 * The name of alg as used in meta files and on the instance command line
 * ("none", "rsa2048", "ecc-p256"), or NULL for an unknown value.
 */
const char *meta_alg_name(enum meta_alg alg)
{
	if ((unsigned int)alg >= sizeof(meta_alg_names) / sizeof(meta_alg_names[0]))
		return NULL;

	return meta_alg_names[alg];
}

/*
 * Parse an algorithm name written by meta_alg_name().  Returns 0 or -EINVAL.
 */
int meta_alg_parse(const char *s, enum meta_alg *ret)
{
	for (size_t i = 0; i < sizeof(meta_alg_names) / sizeof(meta_alg_names[0]); i++) {
		if (strcmp(s, meta_alg_names[i]) == 0) {
			*ret = (enum meta_alg)i;
			return 0;
		}
	}

	return -EINVAL;
}

/*
 * True when s can be an instance id: 1 to META_ID_MAX - 1 characters from
 * [A-Za-z0-9._-], so that it is safe in file names, command lines and logs.
 */
bool meta_id_is_valid(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len == 0 || len >= META_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}

	return true;
}

static void meta_put_b64(FILE *f, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t n = len - i < 3 ? len - i : 3;

		if (n > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (n > 2)
			v |= p[i + 2];
		fputc(meta_b64[v >> 18 & 0x3f], f);
		fputc(meta_b64[v >> 12 & 0x3f], f);
		fputc(n > 1 ? meta_b64[v >> 6 & 0x3f] : '=', f);
		fputc(n > 2 ? meta_b64[v & 0x3f] : '=', f);
	}
}

static void meta_put_hex(FILE *f, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		fprintf(f, "%02x", p[i]);
}

static void meta_put_key(FILE *f, const char *prefix, const struct meta_key *k, bool is_ek)
{
	fprintf(f, "%s.alg=%s\n", prefix, meta_alg_name(k->alg));
	fprintf(f, "%s.handle=0x%08" PRIx32 "\n", prefix, k->handle);
	fprintf(f, "%s.tpm=", prefix);
	meta_put_b64(f, k->tpm, k->tpm_len);
	fprintf(f, "\n%s.name=", prefix);
	meta_put_hex(f, k->name, k->name_len);
	fprintf(f, "\n%s.spki=", prefix);
	meta_put_b64(f, k->spki, k->spki_len);
	fputc('\n', f);
	if (!is_ek)
		return;
	fprintf(f, "%s.cert=", prefix);
	meta_put_b64(f, k->cert, k->cert_len);
	fprintf(f, "\n%s.cert_nv=0x%08" PRIx32 "\n", prefix, k->cert_nv);
}

static bool meta_key_is_complete(const struct meta_key *k, bool is_ek)
{
	if (!k->tpm_len || !k->name_len || !k->spki_len)
		return false;

	return !is_ek || k->cert_len;
}

/*
 * Write m to the file path atomically (temporary file, fsync, rename, fsync
 * of the directory).  Returns 0, -EINVAL when m is incomplete (an EK or the
 * AK without its public area, name or SPKI, an EK without certificate),
 * -ENOMEM, or a file system errno.  Any context; blocks on disk I/O.
 */
int meta_save(const struct meta *m, const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	char prefix[8];
	FILE *f;
	int r;

	if (!meta_id_is_valid(m->id) || m->n_ek > META_MAX_EKS)
		return -EINVAL;
	for (size_t i = 0; i < m->n_ek; i++)
		if (m->ek[i].alg == META_ALG_NONE || !meta_key_is_complete(&m->ek[i], true))
			return -EINVAL;
	if (m->ak.alg != META_ALG_NONE && !meta_key_is_complete(&m->ak, false))
		return -EINVAL;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "version=%d\nid=%s\ncreated=%" PRId64 "\n", META_VERSION, m->id, m->created);
	for (size_t i = 0; i < m->n_ek; i++) {
		(void)snprintf(prefix, sizeof(prefix), "ek.%zu", i);
		meta_put_key(f, prefix, &m->ek[i], true);
	}
	if (m->ak.alg != META_ALG_NONE)
		meta_put_key(f, "ak", &m->ak, false);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}

	r = fsutil_write_atomic(path, buf, len, 0600);
	free(buf);

	return r;
}

static int meta_b64_value(char c)
{
	const char *p = c ? strchr(meta_b64, c) : NULL;

	return p ? (int)(p - meta_b64) : -1;
}

/* Strict base64: padded, canonical (unused bits zero), not empty. */
static int meta_get_b64(const char *s, uint8_t **ret, size_t *ret_len)
{
	size_t slen = strlen(s);
	size_t pad = 0;
	uint8_t *out;
	size_t n = 0;

	if (slen == 0 || slen % 4)
		return -EINVAL;
	if (s[slen - 1] == '=')
		pad = s[slen - 2] == '=' ? 2 : 1;
	out = malloc(slen / 4 * 3);
	if (!out)
		return -ENOMEM;

	for (size_t i = 0; i < slen; i += 4) {
		bool last = i + 4 == slen;
		uint32_t v = 0;

		for (size_t j = 0; j < 4; j++) {
			int d = meta_b64_value(s[i + j]);

			if (d < 0 && !(last && j >= 4 - pad))
				goto err_free;
			v = v << 6 | (uint32_t)(d < 0 ? 0 : d);
		}
		if (last && ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff))))
			goto err_free;
		out[n++] = v >> 16;
		if (!last || pad < 2)
			out[n++] = v >> 8 & 0xff;
		if (!last || pad < 1)
			out[n++] = v & 0xff;
	}

	*ret = out;
	*ret_len = n;

	return 0;

err_free:
	free(out);
	return -EINVAL;
}

static int meta_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;

	return -1;
}

/* Strict hex: lowercase, even length, not empty. */
static int meta_get_hex(const char *s, uint8_t **ret, size_t *ret_len)
{
	size_t slen = strlen(s);
	uint8_t *out;

	if (slen == 0 || slen % 2)
		return -EINVAL;
	out = malloc(slen / 2);
	if (!out)
		return -ENOMEM;

	for (size_t i = 0; i < slen / 2; i++) {
		int hi = meta_hex_digit(s[2 * i]);
		int lo = meta_hex_digit(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(out);
			return -EINVAL;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}

	*ret = out;
	*ret_len = slen / 2;

	return 0;
}

/* "0x" and exactly eight lowercase hex digits. */
static int meta_get_u32(const char *s, uint32_t *ret)
{
	uint32_t v = 0;

	if (strlen(s) != 10 || s[0] != '0' || s[1] != 'x')
		return -EINVAL;
	for (size_t i = 2; i < 10; i++) {
		int d = meta_hex_digit(s[i]);

		if (d < 0)
			return -EINVAL;
		v = v << 4 | (uint32_t)d;
	}
	*ret = v;

	return 0;
}

static int meta_get_int64(const char *s, int64_t *ret)
{
	char *end;
	long long v;

	if (!((s[0] >= '0' && s[0] <= '9') || (s[0] == '-' && s[1] >= '0' && s[1] <= '9')))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;

	return 0;
}

static int meta_key_field(struct meta_key *k, enum meta_field f, const char *v)
{
	switch (f) {
	case META_F_ALG:
		return meta_alg_parse(v, &k->alg);
	case META_F_HANDLE:
		return meta_get_u32(v, &k->handle);
	case META_F_TPM:
		return meta_get_b64(v, &k->tpm, &k->tpm_len);
	case META_F_NAME:
		return meta_get_hex(v, &k->name, &k->name_len);
	case META_F_SPKI:
		return meta_get_b64(v, &k->spki, &k->spki_len);
	case META_F_CERT:
		return meta_get_b64(v, &k->cert, &k->cert_len);
	case META_F_CERT_NV:
		return meta_get_u32(v, &k->cert_nv);
	}

	return -EINVAL;	/* unreachable: f comes from meta_field_parse() */
}

static int meta_field_parse(const char *s, bool is_ek, enum meta_field *ret)
{
	static const char *const names[] = {
		[META_F_ALG] = "alg", [META_F_HANDLE] = "handle", [META_F_TPM] = "tpm",
		[META_F_NAME] = "name", [META_F_SPKI] = "spki", [META_F_CERT] = "cert",
		[META_F_CERT_NV] = "cert_nv",
	};
	size_t n = is_ek ? META_F_CERT_NV + 1 : META_F_SPKI + 1;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(s, names[i]) == 0) {
			*ret = (enum meta_field)i;
			return 0;
		}
	}

	return -EINVAL;
}

static int meta_parse_key_line(struct meta_parse *p, const char *key, const char *v)
{
	struct meta_key *k;
	unsigned int *seen;
	enum meta_field f;
	bool is_ek = false;
	int r;

	if (strncmp(key, "ak.", 3) == 0) {
		k = &p->m.ak;
		seen = &p->ak_seen;
		key += 3;
	} else if (strncmp(key, "ek.", 3) == 0 && key[3] >= '0' &&
		   key[3] < '0' + META_MAX_EKS && key[4] == '.') {
		k = &p->m.ek[key[3] - '0'];
		seen = &p->ek_seen[key[3] - '0'];
		is_ek = true;
		key += 5;
	} else {
		return -EINVAL;
	}

	r = meta_field_parse(key, is_ek, &f);
	if (r < 0 || (*seen & 1u << f))
		return -EINVAL;
	*seen |= 1u << f;

	return meta_key_field(k, f, v);
}

static int meta_parse_line(struct meta_parse *p, char *line)
{
	char *v = strchr(line, '=');
	int64_t version;

	if (!v)
		return -EINVAL;
	*v++ = '\0';

	if (strcmp(line, "version") == 0) {
		if ((p->seen & META_SEEN_VERSION) || meta_get_int64(v, &version) < 0 ||
		    version != META_VERSION)
			return -EINVAL;
		p->seen |= META_SEEN_VERSION;
	} else if (strcmp(line, "id") == 0) {
		if ((p->seen & META_SEEN_ID) || !meta_id_is_valid(v))
			return -EINVAL;
		strcpy(p->m.id, v);
		p->seen |= META_SEEN_ID;
	} else if (strcmp(line, "created") == 0) {
		if ((p->seen & META_SEEN_CREATED) || meta_get_int64(v, &p->m.created) < 0)
			return -EINVAL;
		p->seen |= META_SEEN_CREATED;
	} else {
		return meta_parse_key_line(p, line, v);
	}

	return 0;
}

/* Cross-field rules once every line has been read. */
static int meta_parse_check(struct meta_parse *p)
{
	struct meta *m = &p->m;

	if (p->seen != (META_SEEN_VERSION | META_SEEN_ID | META_SEEN_CREATED))
		return -EINVAL;

	for (size_t i = 0; i < META_MAX_EKS; i++) {
		if (!p->ek_seen[i])
			break;
		if (p->ek_seen[i] != META_EK_FIELDS || m->ek[i].alg == META_ALG_NONE)
			return -EINVAL;
		m->n_ek = i + 1;
	}
	for (size_t i = m->n_ek; i < META_MAX_EKS; i++)
		if (p->ek_seen[i])
			return -EINVAL;

	if (p->ak_seen && (p->ak_seen != META_AK_FIELDS || m->ak.alg == META_ALG_NONE))
		return -EINVAL;

	return 0;
}

static int meta_parse_buffer(char *buf, size_t len, struct meta_parse *p)
{
	char *line = buf;
	int r;

	/* Text only: every line ends with '\n', no NUL, no CR, no blank line. */
	if (len == 0 || buf[len - 1] != '\n' || memchr(buf, '\0', len) || memchr(buf, '\r', len))
		return -EINVAL;
	buf[len - 1] = '\0';

	while (line) {
		char *next = strchr(line, '\n');

		if (next)
			*next++ = '\0';
		r = meta_parse_line(p, line);
		if (r < 0)
			return r;
		line = next;
	}

	return meta_parse_check(p);
}

/*
 * Read and strictly parse the meta file at path into *ret: an unknown or
 * duplicate key, a missing field, or a malformed value makes the whole file
 * invalid.  Returns 0, -ENOENT, -EINVAL for a malformed file, -ENOMEM, or
 * another file system errno.  On success the caller releases *ret with
 * meta_clear().
 */
int meta_load(const char *path, struct meta *ret)
{
	struct meta_parse *p;
	uint8_t *buf;
	size_t len;
	int r;

	r = fileio_read(".", path, META_FILE_MAX, &buf, &len);
	if (r < 0)
		return r == -EFBIG ? -EINVAL : r;

	p = calloc(1, sizeof(*p));
	if (!p) {
		free(buf);
		return -ENOMEM;
	}
	r = meta_parse_buffer((char *)buf, len, p);
	free(buf);
	if (r < 0)
		meta_clear(&p->m);
	else
		*ret = p->m;
	free(p);

	return r;
}

static void meta_key_clear(struct meta_key *k)
{
	free(k->tpm);
	free(k->name);
	free(k->spki);
	free(k->cert);
	memset(k, 0, sizeof(*k));
}

/*
 * Free the buffers of m and zero it.  NULL is a no-op.
 */
void meta_clear(struct meta *m)
{
	if (!m)
		return;

	for (size_t i = 0; i < META_MAX_EKS; i++)
		meta_key_clear(&m->ek[i]);
	meta_key_clear(&m->ak);
	memset(m, 0, sizeof(*m));
}

static int meta_blob_dup(const uint8_t *src, size_t len, uint8_t **ret)
{
	*ret = NULL;
	if (!src || len == 0)
		return 0;
	*ret = malloc(len);
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, src, len);

	return 0;
}

static int meta_key_dup(const struct meta_key *s, struct meta_key *d)
{
	*d = *s;
	d->tpm = d->name = d->spki = d->cert = NULL;
	if (meta_blob_dup(s->tpm, s->tpm_len, &d->tpm) < 0 ||
	    meta_blob_dup(s->name, s->name_len, &d->name) < 0 ||
	    meta_blob_dup(s->spki, s->spki_len, &d->spki) < 0 ||
	    meta_blob_dup(s->cert, s->cert_len, &d->cert) < 0)
		return -ENOMEM;

	return 0;
}

/*
 * Deep-copy src into *ret.  Returns 0 or -ENOMEM; on failure *ret holds
 * what was copied so far and must still be given to meta_clear().
 */
int meta_copy(const struct meta *src, struct meta *ret)
{
	size_t i;
	int r;

	memset(ret, 0, sizeof(*ret));
	memcpy(ret->id, src->id, sizeof(ret->id));
	ret->created = src->created;
	ret->n_ek = src->n_ek;
	for (i = 0; i < src->n_ek; i++) {
		r = meta_key_dup(&src->ek[i], &ret->ek[i]);
		if (r < 0)
			return r;
	}

	return meta_key_dup(&src->ak, &ret->ak);
}
