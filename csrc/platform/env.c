/* env.c: settings given as text (environment variables, and sizes and delays
 * given to Python as strings), read in C.
 *
 * The one parser of each kind: the preloaded library (libtlalloc.so) reads
 * its variables here, and the Python package calls the same functions through
 * its extension (tlalloc._config.parse_size and the others), so that a value
 * means the same in both and a bad one is refused by both:
 *
 * - a size: optional spaces, a decimal number (digits, optionally a point and
 *   more digits), optional spaces, an optional unit, optional spaces. Units,
 *   case-insensitive: none or B (bytes), K or KiB, MiB, GiB, TiB (powers of
 *   1024), KB, MB, GB, TB (powers of 1000). The result must be a whole number
 *   of bytes ("1.5KB" is 1500, "1.5B" is refused), computed exactly. Digits
 *   and spaces are ASCII ones only ("\uff14MiB", a fullwidth 4, is refused);
 * - a delay: the same kind of number, then nothing or "ms" (milliseconds) or
 *   "s" (seconds), case-sensitive, a whole number of milliseconds;
 * - a flag: "0" or "1", surrounding spaces ignored.
 *
 * Nothing here allocates: libtlalloc.so parses from inside the process's first
 * malloc.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

static int tl_is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int tl_lower(char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

/* Unit names (lower case) and their factors. */
struct tl_unit {
    const char *name;
    uint64_t factor;
};
static const struct tl_unit tl_units[] = {
    {"", 1},
    {"b", 1},
    {"k", (uint64_t)1 << 10},
    {"kib", (uint64_t)1 << 10},
    {"mib", (uint64_t)1 << 20},
    {"gib", (uint64_t)1 << 30},
    {"tib", (uint64_t)1 << 40},
    {"kb", 1000u},
    {"mb", 1000000u},
    {"gb", 1000000000u},
    {"tb", 1000000000000u},
};

/* "<spaces><number><spaces><unit><spaces>": the number as an exact decimal
 * times the factor of its unit, found in `units` (n entries; the unit's case
 * ignored if `fold`). A mantissa beyond 2^64 is only remembered as "too big"
 * (it is out of range at any unit). */
static int tl_parse_number_unit(const char *s, const struct tl_unit *units, size_t n, int fold,
                                uint64_t *out) {
    while (tl_is_space(*s)) s++;
    if (!(*s >= '0' && *s <= '9')) return TL_PARSE_SYNTAX;
    unsigned __int128 mant = 0;
    int big = 0, scale = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        mant = mant * 10u + (unsigned)(*s - '0');
        if (mant > UINT64_MAX) big = 1, mant = UINT64_MAX;
    }
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9')) return TL_PARSE_SYNTAX;
        const char *f = s;
        while (*s >= '0' && *s <= '9') s++;
        const char *fend = s;
        while (fend > f && fend[-1] == '0') fend--; /* "2.50" is "2.5" */
        for (; f < fend; f++) {
            if (scale >= 19) return TL_PARSE_FRACTION; /* finer than a unit at any factor */
            if (!big) {
                mant = mant * 10u + (unsigned)(*f - '0');
                if (mant > UINT64_MAX * (unsigned __int128)10) big = 1;
            }
            scale++;
        }
    }
    while (tl_is_space(*s)) s++;
    char unit[4];
    size_t len = 0;
    for (; (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'); s++) {
        if (len == sizeof unit - 1) return TL_PARSE_SYNTAX; /* no unit is that long */
        unit[len++] = fold ? (char)tl_lower(*s) : *s;
    }
    unit[len] = '\0';
    while (tl_is_space(*s)) s++;
    if (*s != '\0') return TL_PARSE_SYNTAX;
    uint64_t factor = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(unit, units[i].name) == 0) factor = units[i].factor;
    if (!factor) return TL_PARSE_SYNTAX;
    if (big) return TL_PARSE_RANGE;
    unsigned __int128 v = mant * factor; /* < 2^68 * 2^40: no overflow */
    unsigned __int128 div = 1;
    for (int i = 0; i < scale; i++) div *= 10u;
    if (v % div != 0) return TL_PARSE_FRACTION;
    v /= div;
    if (v > UINT64_MAX) return TL_PARSE_RANGE;
    *out = (uint64_t)v;
    return TL_PARSE_OK;
}

int tl_parse_size(const char *s, uint64_t *out) {
    return tl_parse_number_unit(s, tl_units, sizeof tl_units / sizeof tl_units[0], 1, out);
}

/* As tlalloc.pool._check_delay: milliseconds, units "ms" or "s" (case counts). */
static const struct tl_unit tl_delay_units[] = {{"", 1}, {"ms", 1}, {"s", 1000}};

int tl_parse_delay_ms(const char *s, uint64_t *out) {
    return tl_parse_number_unit(s, tl_delay_units, sizeof tl_delay_units / sizeof tl_delay_units[0],
                                0, out);
}

int tl_parse_flag(const char *s, int *out) {
    while (tl_is_space(*s)) s++;
    if (*s != '0' && *s != '1') return TL_PARSE_SYNTAX;
    int v = *s++ == '1';
    while (tl_is_space(*s)) s++;
    if (*s != '\0') return TL_PARSE_SYNTAX;
    *out = v;
    return TL_PARSE_OK;
}
