/* check_host.h - the host-side pieces every self-checking harness of dev/ shares: a reproducible
 * random source, fp16 / bf16 rounding, the pass/fail tally with its last line "N passed, N failed",
 * and the command line (case filter, --bench, ...).
 *
 * Host code only, no CUDA header: the backward's CPU simulator build (g++, dev/bwd/sim) uses it
 * too. Each harness includes it once (everything is static). */
#ifndef DEV_CHECK_HOST_H
#define DEV_CHECK_HOST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flash_attn_c.h"
#include "half_host.h"

/* ---- random numbers: xorshift64* ------------------------------------------------------------
 * Each harness owns one state with its own seed (so a harness draws the same inputs as before
 * the helpers were shared); the draw order is part of what a case is. */
typedef struct check_rng {
    uint64_t state;
} check_rng;

/* uniform in [0, 1) with 53 random bits */
static inline double check_rng_uniform(check_rng *r)
{
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (double)((r->state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

/* standard normal (Box-Muller); never exactly zero in practice */
static inline float check_rng_normal(check_rng *r)
{
    double u1 = check_rng_uniform(r), u2 = check_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---- fp16 / bf16 --------------------------------------------------------------------------- */
static inline uint16_t check_to_bits(fa_dtype dt, float x)
{
    return dt == FA_BF16 ? host_f32_to_bf16(x) : host_f32_to_f16(x);
}

static inline float check_from_bits(fa_dtype dt, uint16_t u)
{
    return dt == FA_BF16 ? host_bf16_to_f32(u) : host_f16_to_f32(u);
}

/* x rounded to the dtype (round to nearest even) */
static inline float check_round(fa_dtype dt, float x) { return check_from_bits(dt, check_to_bits(dt, x)); }

/* half an ulp at 1.0 */
static inline double check_half_ulp(fa_dtype dt) { return dt == FA_BF16 ? 1.0 / 256.0 : 1.0 / 2048.0; }

static inline const char *check_dtype_name(fa_dtype dt) { return dt == FA_BF16 ? "bf16" : "fp16"; }

/* x[0..n) = normal random numbers rounded to the dtype, drawn in index order */
static inline void check_fill_normal(check_rng *r, fa_dtype dt, uint16_t *x /* (n,) */, size_t n)
{
    for (size_t i = 0; i < n; ++i) x[i] = check_to_bits(dt, check_rng_normal(r));
}

/* ---- pass / fail tally --------------------------------------------------------------------- */
typedef struct check_tally {
    int passed, failed;
} check_tally;

static inline void check_count(check_tally *t, int ok)
{
    if (ok)
        ++t->passed;
    else
        ++t->failed;
}

/* Prints the last line every harness ends with; returns the exit status (1 if any failed). */
static inline int check_summary(const check_tally *t)
{
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}

/* ---- command line -------------------------------------------------------------------------- */
enum {
    CHECK_OPT_K = 1,       /* -k STR: case filter (substring of the name) */
    CHECK_OPT_FILTER = 2,  /* --filter STR: the same */
    CHECK_OPT_NO_GPU = 4,  /* --no-gpu */
    CHECK_OPT_BENCH = 8,   /* --bench */
    CHECK_OPT_DET = 16,    /* --det (with --bench) */
    CHECK_OPT_STRICT = 32  /* an unknown argument (or a filter without its value) is an error */
};

typedef struct check_cli {
    const char *filter;  /* NULL = every case */
    int no_gpu, bench, det;
} check_cli;

/* Parses argv for the options in `accept` (CHECK_OPT_* bits). Without CHECK_OPT_STRICT anything
 * else is ignored; with it, a usage line "usage: argv[0] usage_tail" goes to stderr and 0 is
 * returned (the harness exits with status 2). Returns 1 otherwise. A later filter wins. */
static inline int check_parse_cli(int argc, char **argv, unsigned accept, const char *usage_tail, check_cli *cli)
{
    memset(cli, 0, sizeof *cli);
    /* line-buffered even into a pipe: a harness killed by a timeout (a hang, or a run that is
     * only slow) still shows every line it printed, so the two can be told apart */
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if ((((accept & CHECK_OPT_K) && !strcmp(a, "-k")) || ((accept & CHECK_OPT_FILTER) && !strcmp(a, "--filter"))) &&
            i + 1 < argc)
            cli->filter = argv[++i];
        else if ((accept & CHECK_OPT_NO_GPU) && !strcmp(a, "--no-gpu"))
            cli->no_gpu = 1;
        else if ((accept & CHECK_OPT_BENCH) && !strcmp(a, "--bench"))
            cli->bench = 1;
        else if ((accept & CHECK_OPT_DET) && !strcmp(a, "--det"))
            cli->det = 1;
        else if (accept & CHECK_OPT_STRICT) {
            fprintf(stderr, "usage: %s %s\n", argv[0], usage_tail);
            return 0;
        }
    }
    return 1;
}

/* 1 when the case runs under the filter (its name contains the filter string) */
static inline int check_selected(const check_cli *cli, const char *name)
{
    const int on = cli->filter == NULL || strstr(name, cli->filter) != NULL;
    /* FA_CHECK_VERBOSE=1: one line per case as it starts, with the seconds since the first, so
     * that a harness stopped by a timeout names the case it was in and how long the others took */
    static double t0 = -1.0;
    if (on && getenv("FA_CHECK_VERBOSE") != NULL) {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        const double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
        if (t0 < 0) t0 = now;
        printf("case %s (%.1f s)\n", name, now - t0);
    }
    return on;
}

/* ---- a switch a case sets for itself ------------------------------------------------------
 * The caller's value of an environment variable (the library reads its switches on every call),
 * saved before a case sets the variable and put back after it, so a switch exported for the
 * whole run still applies to the cases that do not set their own. */
typedef struct check_env_saved {
    const char *name;
    int was_set;
    char value[64];  /* the switches' values are short numbers or words */
} check_env_saved;

static inline check_env_saved check_env_save(const char *name)
{
    check_env_saved s;
    const char *v = getenv(name);
    s.name = name;
    s.was_set = v != NULL;
    snprintf(s.value, sizeof s.value, "%s", v != NULL ? v : "");
    return s;
}

static inline void check_env_restore(const check_env_saved *s)
{
    if (s->was_set) setenv(s->name, s->value, 1);
    else unsetenv(s->name);
}

#endif /* DEV_CHECK_HOST_H */
