#include "cmdline.h"
#include "kstring.h"

static const char *skip_spaces(const char *s)
{
	while (*s == ' ')
		s++;
	return s;
}

const char *cmdline_args(const char *cmdline)
{
	const char *s = skip_spaces(cmdline), *w = s;
	while (*w && *w != ' ' && *w != '=')
		w++;
	if (*w == '=')
		return s; /* the first word is already an argument */
	return skip_spaces(w);
}

int cmdline_get(const char *cmdline, const char *key, char *buf, int size)
{
	size_t klen = strlen(key);
	const char *s = cmdline_args(cmdline);
	while (*s) {
		const char *end = s;
		while (*end && *end != ' ')
			end++;
		if ((size_t)(end - s) > klen && strncmp(s, key, klen) == 0 && s[klen] == '=') {
			const char *v = s + klen + 1;
			int n = 0;
			while (v + n < end && n < size - 1) {
				buf[n] = v[n];
				n++;
			}
			buf[n] = 0;
			return n;
		}
		s = skip_spaces(end);
	}
	return -1;
}

int cmdline_parse_u32(const char *s, uint32_t *out)
{
	uint32_t v = 0, base = 10;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		base = 16, s += 2;
	if (!*s)
		return 0;
	for (; *s; s++) {
		uint32_t d;
		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = *s - 'A' + 10;
		else
			return 0;
		v = v * base + d;
	}
	*out = v;
	return 1;
}

uint32_t cmdline_get_u32(const char *cmdline, const char *key, uint32_t fallback)
{
	char buf[24];
	uint32_t v;
	if (cmdline_get(cmdline, key, buf, sizeof(buf)) < 0 || !cmdline_parse_u32(buf, &v))
		return fallback;
	return v;
}
