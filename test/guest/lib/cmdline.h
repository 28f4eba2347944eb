/* key=value arguments on the kernel command line.
 *
 * QEMU's multiboot loader passes "<kernel path> <-append text>" as the
 * multiboot command line; the first word is skipped when it contains no '='
 * so that both forms ("path k=v" and "k=v") work. */
#ifndef KIT_CMDLINE_H
#define KIT_CMDLINE_H

#include <stdint.h>

/* The text after the kernel path (what -append gave). */
const char *cmdline_args(const char *cmdline);
/* Copies the value of `key` into buf; returns its length or -1 if absent. */
int cmdline_get(const char *cmdline, const char *key, char *buf, int size);
/* Parses the value of `key` as decimal or 0x-hex; returns `fallback` when
 * the key is absent or malformed. */
uint32_t cmdline_get_u32(const char *cmdline, const char *key, uint32_t fallback);
/* Whether the value of key parses; stores it in *out. */
int cmdline_parse_u32(const char *s, uint32_t *out);

#endif
