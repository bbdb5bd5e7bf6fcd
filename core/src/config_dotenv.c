/* config_dotenv.c — `.dev.vars` / `.env` files, read as the dotenv package
 * (which wrangler uses) reads them:
 *   KEY=value   KEY: value   export KEY=value
 *   values: unquoted (up to a '#', trimmed), or in '...', "..." or `...`
 *   (quoted values may span lines; double quotes expand \n and \r);
 *   a line that is not an assignment is skipped. */
#include <stdlib.h>
#include <string.h>

#include "config_text.h"
#include "internal.h"

static int is_key(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '.' || c == '-';
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\f' || c == '\v';
}

/* From i (after a value), is the rest of the line blank or a comment? */
static int rest_blank(const char *s, size_t len, size_t i)
{
	while (i < len && is_space(s[i]))
		i++;
	return i >= len || s[i] == '\n' || s[i] == '#';
}

static size_t line_end(const char *s, size_t len, size_t i)
{
	while (i < len && s[i] != '\n')
		i++;
	return i;
}

static int put(dobj_val *obj, const char *k, size_t klen, const char *v, size_t vlen, int expand)
{
	cfg_buf b = { 0 };
	dobj_val *sv;
	size_t i;
	int rc = dobj__cfg_buf_put(&b, "", 0);

	for (i = 0; rc == 0 && i < vlen; i++) {
		if (expand && v[i] == '\\' && i + 1 < vlen && (v[i + 1] == 'n' || v[i + 1] == 'r')) {
			rc = dobj__cfg_buf_put(&b, v[i + 1] == 'n' ? "\n" : "\r", 1);
			i++;
		} else {
			rc = dobj__cfg_buf_put(&b, v + i, 1);
		}
	}
	if (rc == 0) {
		if (!(sv = dobj_val_string(b.p, b.len)))
			rc = DOBJ_ENOMEM;
		else
			rc = dobj_val_put(obj, k, klen, sv);
	}
	dobj__cfg_buf_free(&b);
	return rc;
}

int dobj_config_parse_dotenv(dobj_val **out, const char *text, size_t len, const char *filename)
{
	cfg_text t;
	cfg_buf norm = { 0 };
	dobj_val *obj = NULL;
	const char *s;
	size_t i = 0, n;
	int rc;

	if (!out || (!text && len))
		return dobj_error_set(DOBJ_EARG, "dobj_config_parse_dotenv needs an out pointer and text");
	*out = NULL;
	if (len > DOBJ_CONFIG_MAX_BYTES)
		return dobj_error_set(DOBJ_EARG, "%s: the file is larger than %u bytes",
			filename ? filename : "<dotenv>", DOBJ_CONFIG_MAX_BYTES);
	memset(&t, 0, sizeof(t));
	t.s = text ? text : "";
	t.len = len;
	t.file = filename ? filename : "<dotenv>";
	if ((rc = dobj__cfg_check_utf8(&t)) < 0)
		return rc;
	/* Line ends: CRLF and CR become LF, as dotenv does first. */
	if ((rc = dobj__cfg_buf_put(&norm, "", 0)) < 0)
		return rc;
	for (i = 0; i < len && rc == 0; i++) {
		if (t.s[i] == '\r') {
			rc = dobj__cfg_buf_put(&norm, "\n", 1);
			if (i + 1 < len && t.s[i + 1] == '\n')
				i++;
		} else {
			size_t run = i;
			while (i < len && t.s[i] != '\r')
				i++;
			rc = dobj__cfg_buf_put(&norm, t.s + run, i - run);
			i--;
		}
	}
	if (rc < 0 || !(obj = dobj_val_object())) {
		dobj__cfg_buf_free(&norm);
		return rc < 0 ? rc : DOBJ_ENOMEM;
	}
	s = norm.p;
	n = norm.len;
	i = 0;
	while (i < n && rc == 0) {
		size_t k0, klen, v0, v1, j;
		int quoted = 0;

		while (i < n && (is_space(s[i]) || s[i] == '\n'))
			i++;
		if (i >= n)
			break;
		if (n - i > 7 && memcmp(s + i, "export", 6) == 0 && is_space(s[i + 6])) {
			i += 6;
			while (i < n && is_space(s[i]))
				i++;
		}
		k0 = i;
		while (i < n && is_key(s[i]))
			i++;
		klen = i - k0;
		j = i;
		while (j < n && is_space(s[j]))
			j++;
		if (klen == 0 || j >= n || (s[j] != '=' && !(s[i] == ':' && i + 1 < n && (is_space(s[i + 1]) || s[i + 1] == '\n')))) {
			i = line_end(s, n, i); /* not an assignment */
			continue;
		}
		i = s[j] == '=' ? j + 1 : i + 1;
		while (i < n && is_space(s[i]))
			i++;
		if (i < n && (s[i] == '\'' || s[i] == '"' || s[i] == '`')) {
			char q = s[i];
			for (j = i + 1; j < n; j++) {
				if (s[j] == '\\' && j + 1 < n && s[j + 1] == q) {
					j++;
					continue;
				}
				if (s[j] == q)
					break;
			}
			if (j < n && rest_blank(s, n, j + 1)) {
				v0 = i + 1;
				v1 = j;
				quoted = q == '"' ? 2 : 1;
				rc = put(obj, s + k0, klen, s + v0, v1 - v0, quoted == 2);
				i = line_end(s, n, j + 1);
				continue;
			}
		}
		v0 = i;
		while (i < n && s[i] != '\n' && s[i] != '#')
			i++;
		v1 = i;
		while (v1 > v0 && is_space(s[v1 - 1]))
			v1--;
		rc = put(obj, s + k0, klen, s + v0, v1 - v0, 0);
		i = line_end(s, n, i);
	}
	dobj__cfg_buf_free(&norm);
	if (rc < 0) {
		dobj_val_free(obj);
		return rc;
	}
	*out = obj;
	return 0;
}
