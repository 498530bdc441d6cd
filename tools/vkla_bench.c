/*
 * vkla-bench - GPU-timestamped benchmark of the vkla ops (SPEC: "The benchmark contract"), the
 * tool for comparing devices and vendors.
 *
 *   vkla-bench [--suite quick|full|decode] [--op OPS] [--form FORMS] [--pass fwd,bwd]
 *              [--dtype DTYPES] [--B NS]
 *              [--T NS] [--H NS] [--K NS] [--V NS] [--gate GATES] [--h0] [--reps N]
 *              [--warmup N] [--budget S] [--chunk C] [--check] [--no-roofline] [--json FILE]
 *              [--svg FILE] [--device SEL] [--kernels] [--quiet]
 *   vkla-bench --roofline [--json FILE] [--device SEL]
 *   vkla-bench --compare A.jsonl B.jsonl
 *   vkla-bench --plot RUN.jsonl[,RUN.jsonl...] --svg FILE
 *
 * Cases come from the op table of tools/common.c (every op, every form it offers), so an op
 * joins the suites as soon as its exec function exists. Every option takes a comma-separated
 * list; the cases are the cartesian product, run in one process on one device. The FLOP and
 * byte models, the suites and the roofline are described in docs/bench.md.
 * Exit status: 0 ok, 1 a case failed its check or errored, 2 bad arguments, unreadable files or
 * no device.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_kernels.h"
#include "bench_report.h"
#include "common.h"
#include "vkla_ref.h"

#ifdef VKLA_HAVE_COMMIT_H
#include "vkla_commit.h"
#endif
#ifndef VKLA_COMMIT
#define VKLA_COMMIT "unknown"
#endif

#define PROG "vkla-bench"
#define MAX_LIST 64
/* keep the float64 reference of --check around a second: larger cases check a prefix */
#define CHECK_BUDGET 4.0e8

/* ------------------------------------------------------------------------------------------
 * Lists
 * ---------------------------------------------------------------------------------------- */
typedef struct strlist {
  char *item[MAX_LIST];
  int n;
  char *store;
} strlist;

typedef struct u32list {
  uint32_t v[MAX_LIST];
  int n;
} u32list;

static int die(const char *where, const char *what)
{
  fprintf(stderr, PROG ": %s: %s\n", where, what);
  return 2;
}

static int split(const char *flag, const char *s, strlist *l)
{
  free(l->store);
  memset(l, 0, sizeof *l);
  l->store = strdup(s);
  if (!l->store)
    return die(flag, "out of memory");
  char *p = l->store;
  for (;;) {
    char *c = strchr(p, ',');
    if (c)
      *c = 0;
    if (!*p)
      return die(flag, "empty item in the list");
    if (l->n == MAX_LIST)
      return die(flag, "too many items in the list");
    l->item[l->n++] = p;
    if (!c)
      break;
    p = c + 1;
  }
  return 0;
}

static int has_item(const strlist *l, const char *s)
{
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->item[i], s) == 0)
      return 1;
  return 0;
}

static int parse_u32list(const char *flag, const char *s, u32list *l, int allow_zero)
{
  strlist sl;
  memset(&sl, 0, sizeof sl);
  int rc = split(flag, s, &sl);
  l->n = 0;
  for (int i = 0; rc == 0 && i < sl.n; i++) {
    char *it = sl.item[i];
    size_t len = strlen(it);
    uint32_t mul = 1;
    if (len > 1 && (it[len - 1] == 'k' || it[len - 1] == 'K')) {
      it[len - 1] = 0;
      mul = 1024;
    }
    uint32_t v;
    char msg[128];
    if (tool_parse_u32(it, &v) != 0 || (!allow_zero && v == 0) || (uint64_t)v * mul > INT32_MAX) {
      snprintf(msg, sizeof msg, "'%s' is not a %s integer", sl.item[i],
               allow_zero ? "non-negative" : "positive");
      rc = die(flag, msg);
      break;
    }
    l->v[l->n++] = v * mul;
  }
  free(sl.store);
  return rc;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static uint64_t hash_case(const char *op, uint32_t B, uint32_t T, uint32_t H, uint32_t K,
                          uint32_t V, const char *gate)
{
  char buf[256];
  snprintf(buf, sizeof buf, "%s|%u|%u|%u|%u|%u|%s", op, B, T, H, K, V, gate);
  uint64_t h = 1469598103934665603ull;
  for (const char *c = buf; *c; c++)
    h = (h ^ (unsigned char)*c) * 1099511628211ull;
  return h;
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------
 * Suites (docs/bench.md). A suite is a list of shape groups; explicit --B/--T/--H/--K/--V,
 * --op, --form, --dtype, --gate, --reps and --warmup replace the suite's own values (--T does
 * not apply to decode groups, which are T = 1 by definition).
 * ---------------------------------------------------------------------------------------- */
typedef struct suite_group {
  const char *B, *T, *H, *K, *V;
  int decode; /* the decode step: recurrent form, T = 1, with h0 and ht */
} suite_group;

typedef struct suite_def {
  const char *name;
  const char *dtypes;
  const char *passes;
  uint32_t reps, warmup;
  int ngroups;
  suite_group g[6];
} suite_def;

#define FULL_T "2k,4k,8k,16k"
static const suite_def suites[] = {
    {"quick", "f32,f16,bf16", "fwd,bwd", 3, 1, 2,
     {{"1", "64,256,1024", "2", "64", "64", 0}, {"1,16", "1", "2", "64", "64", 1}}},
    /* the model families' shapes: head dims 256 (RetNet-style), 128 (GLA, Gated DeltaNet),
     * 64 (Mamba-2 / linear transformer heads), at 2k..16k tokens */
    {"full", "f32,f16,bf16", "fwd", 10, 2, 4,
     {{"4", FULL_T, "8", "256", "256", 0},
      {"8", FULL_T, "16", "128", "128", 0},
      {"8", FULL_T, "32", "64", "64", 0},
      {"4", FULL_T, "64", "64", "64", 0}}},
    {"decode", "f32,f16,bf16", "fwd", 100, 10, 3,
     {{"1,4,16,64", "1", "8", "256", "256", 1},
      {"1,4,16,64", "1", "16", "128", "128", 1},
      {"1,4,16,64", "1", "32", "64", "64", 1}}},
};
static const suite_def default_suite = {
    NULL, "f32", "fwd", 10, 2, 1, {{"1", "1024", "4", "64", "64", 0}}};

/* ------------------------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------------------------- */
typedef struct bcase {
  const tool_op *op;
  vkla_form form;
  vkla_dtype dtype;
  uint32_t B, T, H, K, V;
  const char *gate;
  int h0, decode;
  int bwd;        /* the backward pass (--pass bwd) */
  char skip[160]; /* non-empty: reported as unsupported without running */
} bcase;

typedef struct caselist {
  bcase *c;
  int n, cap;
} caselist;

static int add_case(caselist *l, const bcase *c)
{
  if (l->n == l->cap) {
    int nc = l->cap ? 2 * l->cap : 64;
    bcase *p = realloc(l->c, (size_t)nc * sizeof *p);
    if (!p)
      return -1;
    l->c = p;
    l->cap = nc;
  }
  l->c[l->n++] = *c;
  return 0;
}

typedef struct selection {
  const suite_def *suite;
  strlist ops, forms, dtypes, gates, passes;
  int ops_given, forms_given, gates_given, dtypes_given, passes_given;
  u32list Bs, Ts, Hs, Ks, Vs;
  int B_given, T_given, H_given, K_given, V_given;
  int h0;
} selection;

static int op_takes(const tool_op *op, int input)
{
  return ((op->required | op->optional) & TI_BIT(input)) != 0;
}

static int gate_input(const char *gate)
{
  return strcmp(gate, "g") == 0 ? TI_G : strcmp(gate, "g_gamma") == 0 ? TI_G_GAMMA
       : strcmp(gate, "gk") == 0 ? TI_GK : -1;
}

/* Expands the selection into cases, table-driven over tool_ops. Notes go to stderr. */
static int build_cases(const selection *s, caselist *out, int quiet)
{
  static const vkla_form form_order[] = {VKLA_FORM_CHUNK, VKLA_FORM_RECURRENT, VKLA_FORM_ATTN,
                                         VKLA_FORM_RNN};
  char noted_missing[64] = {0}, noted_decode[64] = {0}; /* one note per op */
  for (int gi = 0; gi < s->suite->ngroups; gi++) {
    const suite_group *g = &s->suite->g[gi];
    u32list Bs, Ts, Hs, Ks, Vs;
    if ((s->B_given ? (Bs = s->Bs, 0) : parse_u32list("--B", g->B, &Bs, 0)) ||
        ((s->T_given && !g->decode) ? (Ts = s->Ts, 0) : parse_u32list("--T", g->T, &Ts, 0)) ||
        (s->H_given ? (Hs = s->Hs, 0) : parse_u32list("--H", g->H, &Hs, 0)) ||
        (s->K_given ? (Ks = s->Ks, 0) : parse_u32list("--K", g->K, &Ks, 0)) ||
        (s->V_given ? (Vs = s->Vs, 0) : parse_u32list("--V", g->V, &Vs, 0)))
      return -1;
    for (int oi = 0; oi < tool_op_count; oi++) {
      const tool_op *op = &tool_ops[oi];
      int explicit_op = s->ops_given && has_item(&s->ops, op->name);
      if (s->ops_given && !explicit_op)
        continue;
      const int ni = oi < 64 ? oi : 63;
      if (!op->exec && !explicit_op) {
        if (!noted_missing[ni] && !quiet)
          fprintf(stderr, PROG ": note: %s is not in this build of vkla yet; skipped\n", op->name);
        noted_missing[ni] = 1;
        continue;
      }
      if (g->decode && !(op->causal && op_takes(op, TI_H0) &&
                         (op->forms & TOOL_FORM_BIT(VKLA_FORM_RECURRENT)))) {
        if (!noted_decode[ni] && !quiet)
          fprintf(stderr, PROG ": note: %s has no decode step (no recurrent form); not in the "
                          "decode cases\n", op->name);
        noted_decode[ni] = 1;
        continue;
      }
      for (size_t fi = 0; fi < sizeof form_order / sizeof form_order[0]; fi++) {
        vkla_form form = form_order[fi];
        const char *fname = vkla_form_name(form);
        int offered = (op->forms & TOOL_FORM_BIT(form)) != 0;
        int wanted = s->forms_given ? has_item(&s->forms, fname) : offered;
        if (g->decode)
          wanted = wanted && form == VKLA_FORM_RECURRENT;
        if (!wanted)
          continue;
        /* a form the op lacks is a row only when the user named both the op and the form */
        if (!offered && !(explicit_op && s->forms_given))
          continue;
        for (int pi = 0; pi < s->passes.n; pi++)
        for (int di = 0; di < s->dtypes.n; di++)
        for (int gti = 0; gti < s->gates.n; gti++)
        for (int bi = 0; bi < Bs.n; bi++)
        for (int ti = 0; ti < Ts.n; ti++)
        for (int hi = 0; hi < Hs.n; hi++)
        for (int ki = 0; ki < Ks.n; ki++)
        for (int vi = 0; vi < Vs.n; vi++) {
          bcase c;
          memset(&c, 0, sizeof c);
          c.op = op;
          c.form = form;
          c.bwd = strcmp(s->passes.item[pi], "bwd") == 0;
          if (c.bwd && g->decode)
            continue; /* the decode step is inference only */
          if (c.bwd && form != VKLA_FORM_CHUNK && !s->forms_given)
            continue; /* one backward algorithm (chunkwise) serves every form */
          tool_parse_dtype(s->dtypes.item[di], &c.dtype);
          c.B = Bs.v[bi];
          c.T = Ts.v[ti];
          c.H = Hs.v[hi];
          c.K = Ks.v[ki];
          c.V = Vs.v[vi];
          c.gate = s->gates.item[gti];
          if (strcmp(c.gate, "auto") == 0)
            c.gate = op_takes(op, TI_G) ? "g" : "none";
          c.decode = g->decode;
          c.h0 = (g->decode || s->h0) && op->causal && op_takes(op, TI_H0);
          int gin = gate_input(c.gate);
          if (!op->exec || (c.bwd && !op->exec_bwd)) {
            snprintf(c.skip, sizeof c.skip, "%s%s is not available in this build of vkla",
                     op->name, c.bwd ? " backward" : "");
          } else if (!offered) {
            char f[128];
            tool_op_forms_text(op, f, sizeof f);
            snprintf(c.skip, sizeof c.skip, "%s has no form %s (%s)", op->name, fname, f);
          } else if (gin >= 0 && !op_takes(op, gin)) {
            snprintf(c.skip, sizeof c.skip, "%s takes no %s gate", op->name, c.gate);
          }
          if (add_case(out, &c) != 0)
            return die("memory", "out of host memory"), -1;
        }
      }
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * Running one case
 * ---------------------------------------------------------------------------------------- */
typedef struct caseres {
  int status;               /* 0 ok, 1 unsupported, 2 error */
  char reason[1536];
  double med, mn, mx, tok_s, gflops, gbs, flops, bytes;
  int checked;              /* 0 no check, 1 PASS, -1 FAIL */
  tool_check chk;
  int64_t check_B, check_T;
  uint32_t reps, warmup;    /* what was timed (the time budget may lower --reps) */
  int have_kern;            /* --kernels: kern holds the breakdown */
  bench_kernels kern;
} caseres;

typedef struct runcfg {
  uint32_t reps, warmup, chunk;
  int check, quiet;
  uint64_t device_bytes;
  double budget_s;          /* timed GPU seconds per case; 0 = no limit */
  int kernels;              /* --kernels: also the per-kernel breakdown */
  uint64_t scratch_limit;   /* the context's: a call whose scratch would pass it runs in pieces */
} runcfg;

/* Rough device memory of a case: inputs, outputs, states and the chunk forms' per-chunk states,
 * which the op keeps within the context's scratch limit by running in pieces of T. */
static double case_device_bytes(const bcase *c, double scratch_limit)
{
  double tok = (double)c->B * c->T, es = (double)vkla_dtype_size(c->dtype);
  double b = tok * c->H * (2.0 * c->K + 2.0 * c->V) * es + tok * c->H * 8.0 /* g, beta */;
  if (strcmp(c->gate, "gk") == 0)
    b += tok * c->H * c->K * 4.0;
  double state = (double)c->B * c->H * c->K * (c->V + 1.0) * 4.0;
  b += 2 * state;
  if (c->form == VKLA_FORM_CHUNK) { /* one state per chunk (lion: one per direction) */
    double chunks = (c->op->causal ? 1.0 : 2.0) * ((double)c->T / 64.0 + 1.0) * state;
    b += chunks < scratch_limit ? chunks : scratch_limit;
  }
  return b;
}

/* The problem --check compares: p itself when the reference's cost fits the budget, else a
 * prefix of its first sequence halved until it fits. Returns 1 when it is a prefix. */
static int check_problem(const tool_op *op, const tool_problem *p, double budget,
                         tool_problem *cp)
{
  *cp = *p;
  if (op->ref_cost(p) <= budget)
    return 0;
  int64_t t = p->T;
  *cp = tool_problem_prefix(p, t);
  while (t > 1 && op->ref_cost(cp) > budget) {
    t /= 2;
    *cp = tool_problem_prefix(p, t);
  }
  return 1;
}

/* --check of a backward case: every gradient against the float64 reference, on the whole
 * problem when the reference is cheap enough, else on a prefix of the first sequence */
static void check_bwd(vkla_context *ctx, const bcase *c, const tool_opts *o,
                      const tool_problem *p, const tool_dev *d, const runcfg *cfg, caseres *cr,
                      tool_err *e, const char **stage, vkla_result *r)
{
  const tool_op *op = c->op;
  tool_problem cp;
  int sliced = check_problem(op, p, CHECK_BUDGET / 2, &cp);
  tool_dev cd;
  memset(&cd, 0, sizeof cd);
  const tool_dev *use = d;
  if (sliced) {
    if (tool_dev_create(ctx, op, &cp, o, 1, &cd, e) != 0 ||
        tool_dev_alloc_grads(ctx, &cp, o, &cd, e) != 0)
      *stage = "check upload";
    use = &cd;
  }
  float *g[TI_GRADS] = {0};
  for (int i = 0; !*stage && i < TI_GRADS; i++)
    if (cp.x[i] && !(g[i] = malloc(tool_input_count(&cp, i) * sizeof(float)))) {
      tool_fail(e, "memory", "out of host memory");
      *stage = "check";
    }
  tool_grad_check gc;
  if (!*stage && (*r = op->exec_bwd(ctx, use, o, 0, 0, NULL)) != VKLA_SUCCESS)
    *stage = "run";
  if (!*stage && tool_dev_download_grads(ctx, use, &cp, g, e) != 0)
    *stage = "download";
  if (!*stage && tool_check_grads(op, &cp, o, (const float *const *)g, &gc, e) != 0)
    *stage = "check";
  if (!*stage) {
    cr->checked = gc.pass ? 1 : -1;
    cr->check_B = cp.B;
    cr->check_T = cp.T;
    double worst = -1; /* the gradient closest to (or furthest past) its target */
    for (int i = 0; i < TI_GRADS; i++)
      if (gc.has[i] && gc.nmse[i] / gc.target[i] > worst) {
        worst = gc.nmse[i] / gc.target[i];
        cr->chk.nmse_o = gc.nmse[i];
        cr->chk.target_o = gc.target[i];
      }
    if (!cfg->quiet || !gc.pass) {
      if (sliced)
        fprintf(stderr, PROG ":   check on the first sequence, B=1 T=%lld\n", (long long)cp.T);
      fprintf(stderr, PROG ":   check:");
      for (int i = 0; i < TI_GRADS; i++)
        if (gc.has[i])
          fprintf(stderr, " d%s %.2e (%.1e)", tool_input_names[i], gc.nmse[i], gc.target[i]);
      fprintf(stderr, ": %s\n", gc.pass ? "PASS" : "FAIL");
    }
  }
  for (int i = 0; i < TI_GRADS; i++)
    free(g[i]);
  if (sliced)
    tool_dev_destroy(ctx, &cd);
}

static void run_case(vkla_context *ctx, const bcase *c, const runcfg *cfg, double *times,
                     caseres *cr)
{
  const tool_op *op = c->op;
  tool_err e;
  memset(&e, 0, sizeof e);
  memset(cr, 0, sizeof *cr);
  if (c->skip[0]) {
    cr->status = 1;
    snprintf(cr->reason, sizeof cr->reason, "%s", c->skip);
    return;
  }
  uint32_t B = c->B, T = c->T, H = c->H, K = c->K, V = c->V;
  if ((uint64_t)B * T > INT32_MAX || (uint64_t)B * T * H * (K > V ? K : V) > (1ull << 34)) {
    cr->status = 1;
    snprintf(cr->reason, sizeof cr->reason, "problem too large for this tool");
    return;
  }
  double need = case_device_bytes(c, (double)cfg->scratch_limit);
  if (cfg->device_bytes && need > 0.85 * (double)cfg->device_bytes) {
    cr->status = 1;
    snprintf(cr->reason, sizeof cr->reason,
             "needs about %.1f GiB of device memory; the device has %.1f GiB", need / 1073741824.0,
             (double)cfg->device_bytes / 1073741824.0);
    return;
  }
  tool_opts o;
  memset(&o, 0, sizeof o);
  o.form = c->form;
  o.dtype = c->dtype;
  o.chunk = cfg->chunk;
  tool_problem p;
  tool_dev d;
  memset(&d, 0, sizeof d);
  uint64_t seed = hash_case(op->name, B, T, H, K, V, c->gate);
  if (tool_random_problem(op, B, T, H, K, V, c->gate, o.dtype, seed, &p, &e) != 0) {
    cr->status = 2;
    snprintf(cr->reason, sizeof cr->reason, "%s: %s", e.where, e.what);
    return;
  }
  if (c->h0) {
    /* an initial state, as a decode step has: uniform in [-0.5, 0.5) */
    size_t n = tool_input_count(&p, TI_H0);
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) {
      tool_problem_free(&p);
      cr->status = 2;
      snprintf(cr->reason, sizeof cr->reason, "out of host memory");
      return;
    }
    uint64_t st = seed ^ 0x5bd1e995u;
    for (size_t j = 0; j < n; j++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      h[j] = (float)((double)(st >> 11) * (1.0 / 9007199254740992.0) - 0.5);
    }
    p.x[TI_H0] = h;
  }
  tool_resolve_opts(op, &p, &o);
  vkla_result r = VKLA_SUCCESS;
  const char *stage = NULL;
  tool_exec_fn exec = c->bwd ? op->exec_bwd : op->exec;
  if (c->bwd && tool_random_grads(op, &p, o.dtype, seed, &e) != 0) {
    stage = "upload";
  } else if (tool_dev_create(ctx, op, &p, &o, 1, &d, &e) != 0 ||
             (c->bwd && tool_dev_alloc_grads(ctx, &p, &o, &d, &e) != 0)) {
    stage = "upload";
  } else if (cfg->check && c->bwd) {
    check_bwd(ctx, c, &o, &p, &d, cfg, cr, &e, &stage, &r);
  } else if (cfg->check) {
    /* the reference is O(T K V) (causal) or O(T^2) (lion): check a prefix of the first
     * sequence when the whole problem would take too long */
    tool_problem cp;
    int sliced = check_problem(op, &p, CHECK_BUDGET, &cp);
    tool_dev cd;
    memset(&cd, 0, sizeof cd);
    const tool_dev *use = &d;
    if (sliced) {
      if (tool_dev_create(ctx, op, &cp, &o, 1, &cd, &e) != 0)
        stage = "check upload";
      use = &cd;
    }
    float *ro = NULL, *rh = NULL;
    if (!stage) {
      ro = malloc(tool_output_count(&cp) * sizeof(float));
      rh = op->causal ? malloc(tool_state_count(&cp) * sizeof(float)) : NULL;
      if (!ro || (op->causal && !rh)) {
        tool_fail(&e, "memory", "out of host memory");
        stage = "check";
      }
    }
    if (!stage && (r = op->exec(ctx, use, &o, 0, 0, NULL)) != VKLA_SUCCESS)
      stage = "run";
    if (!stage && tool_dev_download(ctx, use, ro, rh, &e) != 0)
      stage = "download";
    if (!stage && tool_check_results(op, &cp, &o, ro, rh, &cr->chk, &e) != 0)
      stage = "check";
    if (!stage) {
      cr->checked = cr->chk.pass ? 1 : -1;
      cr->check_B = cp.B;
      cr->check_T = cp.T;
      if (!cfg->quiet || !cr->chk.pass) {
        if (sliced)
          fprintf(stderr, PROG ":   check on the first sequence, B=1 T=%lld\n", (long long)cp.T);
        fprintf(stderr, PROG ":   check: o nmse %.3e (target %.2e)", cr->chk.nmse_o,
                cr->chk.target_o);
        if (cr->chk.has_ht)
          fprintf(stderr, ", ht nmse %.3e (target %.2e)", cr->chk.nmse_ht, cr->chk.target_ht);
        fprintf(stderr, ": %s\n", cr->chk.pass ? "PASS" : "FAIL");
      }
    }
    free(ro);
    free(rh);
    if (sliced)
      tool_dev_destroy(ctx, &cd);
  }
  /* the time budget: one timed call first, then as many repetitions as fit (at least 3) */
  cr->reps = cfg->reps;
  cr->warmup = cfg->warmup;
  if (!stage && cfg->budget_s > 0 && cr->reps > 3) {
    if ((r = exec(ctx, &d, &o, 0, 1, times)) != VKLA_SUCCESS) {
      stage = "bench";
    } else {
      double fit = cfg->budget_s * 1e6 / (times[0] > 1.0 ? times[0] : 1.0);
      if (fit < (double)cr->reps) {
        cr->reps = fit < 3.0 ? 3 : (uint32_t)fit;
        uint32_t w = cr->reps / 3 ? cr->reps / 3 : 1;
        cr->warmup = cr->warmup < w ? cr->warmup : w;
      }
    }
  }
  if (!stage && (r = exec(ctx, &d, &o, cr->warmup, cr->reps, times)) != VKLA_SUCCESS)
    stage = "bench";
  /* the per-kernel breakdown: the same repetitions again, with a timestamp around each launch
   * (after the op's own timing, which the extra stamps would disturb) */
  if (!stage && cfg->kernels) {
    if ((r = bench_kernels_measure(ctx, exec, &d, &o, cr->warmup, cr->reps, &cr->kern)) !=
        VKLA_SUCCESS)
      stage = "kernels";
    cr->have_kern = !stage;
  }
  if (stage) {
    if (r != VKLA_SUCCESS)
      tool_lib_fail(ctx, r, op->name, &e);
    cr->status = (r == VKLA_ERROR_UNSUPPORTED || r == VKLA_ERROR_OUT_OF_MEMORY) ? 1 : 2;
    snprintf(cr->reason, sizeof cr->reason, "%s", e.what);
  } else {
    uint32_t reps = cr->reps;
    qsort(times, reps, sizeof(double), cmp_double);
    cr->med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
    cr->mn = times[0];
    cr->mx = times[reps - 1];
    (c->bwd ? op->model_bwd : op->model)(&p, &o, op->causal, &cr->flops, &cr->bytes);
    double sec = cr->med * 1e-6;
    cr->tok_s = sec > 0 ? (double)B * T / sec : 0;
    cr->gflops = sec > 0 ? cr->flops / sec * 1e-9 : 0;
    cr->gbs = sec > 0 ? cr->bytes / sec * 1e-9 : 0;
  }
  tool_dev_destroy(ctx, &d);
  tool_problem_free(&p);
}

/* ------------------------------------------------------------------------------------------
 * Output
 * ---------------------------------------------------------------------------------------- */
static void print_header(void)
{
  printf("%-11s %-9s %-4s %-5s %4s %7s %4s %4s %4s %-7s %11s %11s %11s %10s %9s %6s %8s %6s "
         "%5s\n",
         "op", "form", "pass", "dtype", "B", "T", "H", "K", "V", "gate", "median_us", "min_us",
         "max_us",
         "tok/s", "GFLOP/s", "%fma", "GB/s", "%bw", "check");
  fflush(stdout);
}

static void fmt_pct(char *buf, size_t n, double frac, int valid)
{
  if (!valid)
    snprintf(buf, n, "-");
  else if (frac >= 0.0995)
    snprintf(buf, n, "%.0f%%", 100 * frac);
  else
    snprintf(buf, n, "%.1f%%", 100 * frac);
}

static void json_num(FILE *f, const char *key, double v, int valid)
{
  if (valid && isfinite(v))
    fprintf(f, ", \"%s\": %.6g", key, v);
  else
    fprintf(f, ", \"%s\": null", key);
}

typedef struct devid {
  vkla_device_info info;
  char api[32];
  const char *suite;
  int have_roof;
  vkla_roofline roof;
} devid;

static void json_device(FILE *jf, const devid *dv)
{
  const vkla_device_info *info = &dv->info;
  fprintf(jf, ", \"device_name\": ");
  tool_json_string(jf, info->name);
  fprintf(jf, ", \"device_type\": \"%s\", \"vendor_id\": %u, \"device_id\": %u",
          tool_device_type_name(info->device_type), info->vendor_id, info->device_id);
  fprintf(jf, ", \"driver_name\": ");
  tool_json_string(jf, info->driver_name);
  fprintf(jf, ", \"driver_info\": ");
  tool_json_string(jf, info->driver_info);
  fprintf(jf, ", \"driver_version\": %u, \"api_version\": \"%s\", \"variant\": ",
          info->driver_version, dv->api);
  tool_json_string(jf, info->variant);
  fprintf(jf, ", \"timestamp_period_ns\": %.6g, \"timestamp_valid_bits\": %u",
          info->timestamp_period_ns, info->timestamp_valid_bits);
  json_num(jf, "peak_gflops", dv->roof.fma_f32_gflops, dv->have_roof);
  json_num(jf, "peak_gflops_f16", dv->roof.fma_f16_gflops,
           dv->have_roof && dv->roof.fma_f16_gflops > 0);
  json_num(jf, "peak_gbs", dv->roof.copy_gbs, dv->have_roof);
  fprintf(jf, ", \"commit\": ");
  tool_json_string(jf, VKLA_COMMIT);
}

static void json_case(FILE *jf, const bcase *c, const caseres *cr, const runcfg *cfg,
                      const devid *dv, double frac_f, double frac_b)
{
  const char *chk = cr->checked == 1 ? "PASS" : cr->checked == -1 ? "FAIL" : NULL;
  fprintf(jf, "{\"op\": \"%s\", \"form\": \"%s\", \"pass\": \"%s\", \"dtype\": \"%s\"",
          c->op->name, vkla_form_name(c->form), c->bwd ? "bwd" : "fwd",
          vkla_dtype_name(c->dtype));
  fprintf(jf, ", \"B\": %u, \"T\": %u, \"H\": %u, \"K\": %u, \"V\": %u, \"gate\": \"%s\"", c->B,
          c->T, c->H, c->K, c->V, c->gate);
  fprintf(jf, ", \"h0\": %s, \"chunk\": %u, \"reps\": %u, \"warmup\": %u, \"suite\": ",
          c->h0 ? "true" : "false", cfg->chunk ? cfg->chunk : 64, cr->reps, cr->warmup);
  if (dv->suite)
    fprintf(jf, "\"%s%s\"", dv->suite, c->decode ? "/decode" : "");
  else
    fprintf(jf, "null");
  fprintf(jf, ", \"status\": \"%s\"",
          cr->status == 0 ? "ok" : cr->status == 1 ? "unsupported" : "error");
  if (cr->status) {
    fprintf(jf, ", \"reason\": ");
    tool_json_string(jf, cr->reason);
  }
  int ok = cr->status == 0;
  json_num(jf, "time_us_median", cr->med, ok);
  json_num(jf, "time_us_min", cr->mn, ok);
  json_num(jf, "time_us_max", cr->mx, ok);
  json_num(jf, "tokens_per_s", cr->tok_s, ok);
  json_num(jf, "gflops", cr->gflops, ok);
  json_num(jf, "gbs", cr->gbs, ok);
  json_num(jf, "flops", cr->flops, ok);
  json_num(jf, "bytes", cr->bytes, ok);
  json_num(jf, "frac_flops", frac_f, ok && dv->have_roof);
  json_num(jf, "frac_bw", frac_b, ok && dv->have_roof);
  fprintf(jf, ", \"check\": ");
  if (chk)
    fprintf(jf, "\"%s\"", chk);
  else
    fprintf(jf, "null");
  if (c->bwd) {
    json_num(jf, "nmse_grad_worst", cr->chk.nmse_o, cr->checked != 0);
  } else {
    json_num(jf, "nmse_o", cr->chk.nmse_o, cr->checked != 0);
    json_num(jf, "nmse_ht", cr->chk.nmse_ht, cr->checked != 0 && cr->chk.has_ht);
  }
  json_num(jf, "check_B", (double)cr->check_B, cr->checked != 0);
  json_num(jf, "check_T", (double)cr->check_T, cr->checked != 0);
  if (cr->have_kern)
    bench_kernels_json(jf, &cr->kern);
  json_device(jf, dv);
  fprintf(jf, "}\n");
  fflush(jf);
}

static void to_rec(const bcase *c, const caseres *cr, const devid *dv, double ff, double fb,
                   bench_rec *r)
{
  memset(r, 0, sizeof *r);
  snprintf(r->op, sizeof r->op, "%s", c->op->name);
  snprintf(r->form, sizeof r->form, "%s", vkla_form_name(c->form));
  snprintf(r->pass, sizeof r->pass, "%s", c->bwd ? "bwd" : "fwd");
  snprintf(r->dtype, sizeof r->dtype, "%s", vkla_dtype_name(c->dtype));
  snprintf(r->gate, sizeof r->gate, "%s", c->gate);
  snprintf(r->status, sizeof r->status, "%s",
           cr->status == 0 ? "ok" : cr->status == 1 ? "unsupported" : "error");
  r->B = c->B;
  r->T = c->T;
  r->H = c->H;
  r->K = c->K;
  r->V = c->V;
  int ok = cr->status == 0;
  r->median_us = ok ? cr->med : NAN;
  r->min_us = ok ? cr->mn : NAN;
  r->max_us = ok ? cr->mx : NAN;
  r->tokens_per_s = ok ? cr->tok_s : NAN;
  r->gflops = ok ? cr->gflops : NAN;
  r->gbs = ok ? cr->gbs : NAN;
  r->frac_flops = ok && dv->have_roof ? ff : NAN;
  r->frac_bw = ok && dv->have_roof ? fb : NAN;
  snprintf(r->device_name, sizeof r->device_name, "%s", dv->info.name);
  snprintf(r->driver_info, sizeof r->driver_info, "%s", dv->info.driver_info);
  snprintf(r->commit, sizeof r->commit, "%s", VKLA_COMMIT);
}

static void print_roofline(FILE *f, const devid *dv)
{
  const vkla_roofline *rf = &dv->roof;
  fprintf(f, "# roofline: f32 FMA %.1f GFLOP/s", rf->fma_f32_gflops);
  if (rf->fma_f16_gflops > 0)
    fprintf(f, ", f16 FMA %.1f GFLOP/s", rf->fma_f16_gflops);
  else
    fprintf(f, ", f16 FMA not measured (no shaderFloat16)");
  fprintf(f, ", copy %.2f GB/s (2 x %.0f MiB, read + write)\n", rf->copy_gbs,
          (double)rf->copy_bytes / 1048576.0);
}

/* ------------------------------------------------------------------------------------------
 * The modes without a device: --compare and --plot
 * ---------------------------------------------------------------------------------------- */
static int mode_compare(const char *fa, const char *fb)
{
  bench_rec *a = NULL, *b = NULL;
  int na = 0, nb = 0;
  char err[1024];
  if (bench_read_jsonl(fa, &a, &na, err, sizeof err) != 0 ||
      bench_read_jsonl(fb, &b, &nb, err, sizeof err) != 0) {
    free(a);
    free(b);
    return die("--compare", err);
  }
  int m = bench_compare(stdout, fa, a, na, fb, b, nb);
  free(a);
  free(b);
  return m > 0 ? 0 : 1;
}

static int mode_plot(const char *files, const char *svg)
{
  strlist fl;
  memset(&fl, 0, sizeof fl);
  if (split("--plot", files, &fl))
    return 2;
  bench_rec *r = NULL;
  int n = 0;
  char err[1024];
  for (int i = 0; i < fl.n; i++)
    if (bench_read_jsonl(fl.item[i], &r, &n, err, sizeof err) != 0) {
      free(r);
      free(fl.store);
      return die("--plot", err);
    }
  char sub[1024] = "";
  for (int i = 0; i < n; i++)
    if (strcmp(r[i].status, "ok") == 0) {
      snprintf(sub, sizeof sub, "%s | %s | commit %s%s", r[i].device_name, r[i].driver_info,
               r[i].commit, fl.n > 1 ? " (and other runs)" : "");
      break;
    }
  int rc = bench_write_svg(svg, r, n, sub, err, sizeof err) == 0 ? 0 : die("--svg", err);
  if (rc == 0)
    fprintf(stderr, PROG ": wrote %s\n", svg);
  free(r);
  free(fl.store);
  return rc;
}

/* ------------------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------------------- */
static void usage(void)
{
  printf(
      "usage: " PROG " [--suite quick|full|decode] [--op OPS] [--form FORMS] [--pass PASSES]\n"
      "                  [--dtype DTYPES]\n"
      "                  [--B NS] [--T NS] [--H NS] [--K NS] [--V NS] [--gate GATES] [--h0]\n"
      "                  [--reps N] [--warmup N] [--budget S] [--chunk C] [--check]\n"
      "                  [--no-roofline] [--json FILE] [--svg FILE] [--device SEL] [--kernels]\n"
      "                  [--quiet]\n"
      "       " PROG " --roofline [--json FILE] [--device SEL]\n"
      "       " PROG " --compare A.jsonl B.jsonl\n"
      "       " PROG " --plot RUN.jsonl[,RUN.jsonl...] --svg FILE\n"
      "\n"
      "Lists are comma-separated (a k suffix multiplies by 1024: 4k = 4096); all combinations\n"
      "run, in one process on one device. Ops and forms come from the op table: by default every\n"
      "op of this build and every form it offers. GATES: none, g, g_gamma, gk (default g).\n"
      "PASSES: fwd (the op), bwd (its backward pass: the gradients of every input from random\n"
      "do and dht; the backward is chunkwise whatever the form); default fwd, quick: fwd,bwd.\n"
      "Suites (explicit options replace the suite's values; --T not in decode groups):\n"
      "  quick   B=1 T=64,256,1024 H=2 K=V=64, forward and backward, plus the decode step at\n"
      "          B=1,16; every dtype; about a minute on lavapipe\n"
      "  full    the model families' shapes: T=2k..16k with (B,H,K=V) = (4,8,256) (8,16,128)\n"
      "          (8,32,64) (4,64,64); every dtype\n"
      "  decode  the recurrent step T=1 with h0/ht, B=1,4,16,64, (H,K=V) = (8,256) (16,128)\n"
      "          (32,64); every dtype\n"
      "Without --suite: B=1 T=1024 H=4 K=V=64 gate g, f32, --reps 10 --warmup 2.\n"
      "Times are GPU timestamps around the op's own dispatches (median, min, max over reps,\n"
      "recorded back to back in one command buffer after warm-up; fewer repetitions, at least\n"
      "3, when they would take more than --budget seconds of GPU time: default 2, 0 = no\n"
      "limit). GFLOP/s and GB/s follow the models of docs/bench.md; %%fma and %%bw are\n"
      "fractions of this device's own peak f32 FMA rate and copy bandwidth, measured first\n"
      "(--no-roofline skips it). --check compares each case with the float64 reference\n"
      "before timing it (large cases: a prefix of the first sequence). --json writes JSON\n"
      "lines, --svg a plot of tokens/s against T. --compare prints the ratio B/A of the\n"
      "median times of the cases both runs have, and their geometric mean. --kernels times\n"
      "every kernel launch of each case too (the same repetitions again, a timestamp around\n"
      "each launch) and prints a table per case: kernel, launches per call, GPU ms, share of\n"
      "the op's time, GFLOP/s and GB/s of its own model (JSON: a \"kernels\" array per row).\n"
      "Progress goes to stderr (--quiet: none).\n");
}

int main(int argc, char **argv)
{
  selection sel;
  memset(&sel, 0, sizeof sel);
  sel.suite = &default_suite;
  uint32_t reps = 0, warmup = 0, chunk = 0;
  int reps_given = 0, warmup_given = 0;
  double budget_s = 2.0;
  const char *json_path = NULL, *svg_path = NULL, *device = NULL, *plot_files = NULL;
  const char *cmp_a = NULL, *cmp_b = NULL;
  int check = 0, quiet = 0, no_roof = 0, roof_only = 0, kernels = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage();
      return 0;
    }
    if (strcmp(a, "--check") == 0) {
      check = 1;
      continue;
    }
    if (strcmp(a, "--quiet") == 0) {
      quiet = 1;
      continue;
    }
    if (strcmp(a, "--kernels") == 0) {
      kernels = 1;
      continue;
    }
    if (strcmp(a, "--no-roofline") == 0) {
      no_roof = 1;
      continue;
    }
    if (strcmp(a, "--roofline") == 0) {
      roof_only = 1;
      continue;
    }
    if (strcmp(a, "--h0") == 0) {
      sel.h0 = 1;
      continue;
    }
    if (strcmp(a, "--compare") == 0) {
      if (i + 2 >= argc || !*argv[i + 1] || !*argv[i + 2])
        return die(a, "needs two JSON lines files: --compare A.jsonl B.jsonl");
      cmp_a = argv[++i];
      cmp_b = argv[++i];
      continue;
    }
    static const char *const valued[] = {"--op", "--form", "--pass", "--dtype", "--B", "--T", "--H", "--K",
                                         "--V", "--gate", "--reps", "--warmup", "--json",
                                         "--device", "--chunk", "--suite", "--svg", "--plot",
                                         "--budget"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
      known |= strcmp(a, valued[k]) == 0;
    if (!known)
      return die(a, a[0] == '-' ? "unknown option (see " PROG " --help)" : "unexpected argument");
    if (i + 1 >= argc || !*argv[i + 1])
      return die(a, "missing value");
    const char *v = argv[++i];
    int rc = 0;
    if (strcmp(a, "--op") == 0)
      rc = split(a, v, &sel.ops), sel.ops_given = 1;
    else if (strcmp(a, "--form") == 0)
      rc = split(a, v, &sel.forms), sel.forms_given = 1;
    else if (strcmp(a, "--dtype") == 0)
      rc = split(a, v, &sel.dtypes), sel.dtypes_given = 1;
    else if (strcmp(a, "--pass") == 0)
      rc = split(a, v, &sel.passes), sel.passes_given = 1;
    else if (strcmp(a, "--gate") == 0)
      rc = split(a, v, &sel.gates), sel.gates_given = 1;
    else if (strcmp(a, "--B") == 0)
      rc = parse_u32list(a, v, &sel.Bs, 0), sel.B_given = 1;
    else if (strcmp(a, "--T") == 0)
      rc = parse_u32list(a, v, &sel.Ts, 0), sel.T_given = 1;
    else if (strcmp(a, "--H") == 0)
      rc = parse_u32list(a, v, &sel.Hs, 0), sel.H_given = 1;
    else if (strcmp(a, "--K") == 0)
      rc = parse_u32list(a, v, &sel.Ks, 0), sel.K_given = 1;
    else if (strcmp(a, "--V") == 0)
      rc = parse_u32list(a, v, &sel.Vs, 0), sel.V_given = 1;
    else if (strcmp(a, "--reps") == 0) {
      reps_given = 1;
      if (tool_parse_u32(v, &reps) != 0 || reps == 0 || reps > 100000)
        rc = die(a, "must be an integer from 1 to 100000");
    } else if (strcmp(a, "--warmup") == 0) {
      warmup_given = 1;
      if (tool_parse_u32(v, &warmup) != 0 || warmup > 100000)
        rc = die(a, "must be an integer from 0 to 100000");
    } else if (strcmp(a, "--budget") == 0) {
      float f;
      if (tool_parse_float(v, &f) != 0 || f < 0)
        rc = die(a, "must be a number of seconds >= 0 (0: no limit)");
      budget_s = f;
    } else if (strcmp(a, "--chunk") == 0) {
      if (tool_parse_u32(v, &chunk) != 0 || chunk == 0)
        rc = die(a, "must be a positive integer");
    } else if (strcmp(a, "--suite") == 0) {
      sel.suite = NULL;
      for (size_t k = 0; k < sizeof suites / sizeof suites[0]; k++)
        if (strcmp(v, suites[k].name) == 0)
          sel.suite = &suites[k];
      if (!sel.suite) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown suite '%s' (quick, full, decode)", v);
        rc = die(a, msg);
      }
    } else if (strcmp(a, "--json") == 0)
      json_path = v;
    else if (strcmp(a, "--svg") == 0)
      svg_path = v;
    else if (strcmp(a, "--plot") == 0)
      plot_files = v;
    else if (strcmp(a, "--device") == 0)
      device = v;
    if (rc)
      return rc;
  }

  /* modes that need no device */
  if (cmp_a)
    return mode_compare(cmp_a, cmp_b);
  if (plot_files) {
    if (!svg_path)
      return die("--plot", "needs --svg FILE");
    return mode_plot(plot_files, svg_path);
  }

  if (!sel.dtypes_given && split("--dtype", sel.suite->dtypes, &sel.dtypes))
    return 2;
  if (!sel.gates_given && split("--gate", sel.suite->name ? "auto" : "g", &sel.gates))
    return 2;
  if (!sel.passes_given && split("--pass", sel.suite->passes, &sel.passes))
    return 2;
  for (int i = 0; i < sel.passes.n; i++)
    if (strcmp(sel.passes.item[i], "fwd") && strcmp(sel.passes.item[i], "bwd")) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown pass '%s' (fwd, bwd)", sel.passes.item[i]);
      return die("--pass", msg);
    }
  if (!reps_given)
    reps = sel.suite->reps;
  if (!warmup_given)
    warmup = sel.suite->warmup;

  /* names are checked up front: a typo is an error, not an "unsupported" row */
  for (int i = 0; i < sel.ops.n; i++)
    if (!tool_find_op(sel.ops.item[i])) {
      char names[256], msg[512];
      tool_op_names_text(names, sizeof names);
      snprintf(msg, sizeof msg, "unknown op '%s' (%s)", sel.ops.item[i], names);
      return die("--op", msg);
    }
  for (int i = 0; i < sel.forms.n; i++) {
    vkla_form f;
    if (tool_parse_form(sel.forms.item[i], &f) != 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown form '%s' (chunk, recurrent, attn, rnn)",
               sel.forms.item[i]);
      return die("--form", msg);
    }
  }
  for (int i = 0; i < sel.dtypes.n; i++) {
    vkla_dtype d;
    if (tool_parse_dtype(sel.dtypes.item[i], &d) != 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown dtype '%s' (f32, f16, bf16)", sel.dtypes.item[i]);
      return die("--dtype", msg);
    }
  }
  for (int i = 0; i < sel.gates.n; i++) {
    const char *g = sel.gates.item[i];
    if (strcmp(g, "none") && strcmp(g, "g") && strcmp(g, "g_gamma") && strcmp(g, "gk") &&
        strcmp(g, "auto")) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown gate '%s' (none, g, g_gamma, gk)", g);
      return die("--gate", msg);
    }
  }

  caselist cl;
  memset(&cl, 0, sizeof cl);
  if (!roof_only && build_cases(&sel, &cl, quiet) != 0)
    return 2;

  FILE *jf = NULL;
  if (json_path) {
    jf = fopen(json_path, "w");
    if (!jf) {
      char msg[512];
      snprintf(msg, sizeof msg, "cannot open %s: %s", json_path, strerror(errno));
      free(cl.c);
      return die("--json", msg);
    }
  }

  tool_err e;
  vkla_context *ctx = NULL;
  if (tool_context_create(device, &ctx, &e) != 0) {
    if (jf)
      fclose(jf);
    free(cl.c);
    return die(e.where, e.what);
  }
  devid dv;
  memset(&dv, 0, sizeof dv);
  vkla_context_device_info(ctx, &dv.info);
  dv.suite = sel.suite->name;
  snprintf(dv.api, sizeof dv.api, "%u.%u.%u", VK_API_VERSION_MAJOR(dv.info.api_version),
           VK_API_VERSION_MINOR(dv.info.api_version), VK_API_VERSION_PATCH(dv.info.api_version));
  printf("# device: %s (%s, vendor 0x%04x, device 0x%04x) | %s %s | Vulkan %s | variant %s | "
         "commit %s\n",
         dv.info.name, tool_device_type_name(dv.info.device_type), dv.info.vendor_id,
         dv.info.device_id, dv.info.driver_name, dv.info.driver_info, dv.api, dv.info.variant,
         VKLA_COMMIT);
  fflush(stdout);

  /* the device's own roofline, once per run */
  if (!no_roof || roof_only) {
    if (!quiet)
      fprintf(stderr, PROG ": measuring this device's peak FMA rate and copy bandwidth...\n");
    double t0 = now_s();
    vkla_result r = vkla_device_roofline(ctx, &dv.roof);
    if (r == VKLA_SUCCESS) {
      dv.have_roof = 1;
      print_roofline(stdout, &dv);
      if (!quiet)
        fprintf(stderr, PROG ": roofline probe took %.1f s\n", now_s() - t0);
    } else {
      fprintf(stderr, PROG ": warning: roofline probe failed (%s); no %%fma / %%bw\n",
              vkla_last_error(ctx));
    }
    fflush(stdout);
  }
  if (roof_only) {
    int rc = dv.have_roof ? 0 : 1;
    if (jf) {
      fprintf(jf, "{\"record\": \"roofline\", \"copy_bytes\": %llu",
              (unsigned long long)dv.roof.copy_bytes);
      json_device(jf, &dv);
      fprintf(jf, "}\n");
      if (fclose(jf) != 0)
        rc = die("--json", "write error");
    }
    vkla_context_destroy(ctx);
    return rc;
  }

  runcfg cfg = {.reps = reps, .warmup = warmup, .chunk = chunk, .check = check, .quiet = quiet,
                .device_bytes = dv.info.device_local_bytes, .budget_s = budget_s,
                .kernels = kernels, .scratch_limit = vkla_context_scratch_limit(ctx)};
  double *times = malloc(reps * sizeof(double));
  bench_rec *recs = calloc((size_t)(cl.n ? cl.n : 1), sizeof *recs);
  if (!times || !recs) {
    free(times);
    free(recs);
    free(cl.c);
    vkla_context_destroy(ctx);
    if (jf)
      fclose(jf);
    return die("memory", "out of host memory");
  }
  print_header();
  int failures = 0, ran = 0;
  double t_start = now_s();
  for (int ci = 0; ci < cl.n; ci++) {
    const bcase *c = &cl.c[ci];
    if (!quiet)
      fprintf(stderr, PROG ": [%d/%d %.0fs] %s %s%s %s B=%u T=%u H=%u K=%u V=%u gate=%s%s\n",
              ci + 1, cl.n, now_s() - t_start, c->op->name, vkla_form_name(c->form),
              c->bwd ? " bwd" : "",
              vkla_dtype_name(c->dtype), c->B, c->T, c->H, c->K, c->V, c->gate,
              c->h0 ? " h0" : "");
    caseres cr;
    run_case(ctx, c, &cfg, times, &cr);
    double ff = dv.have_roof && dv.roof.fma_f32_gflops > 0 ? cr.gflops / dv.roof.fma_f32_gflops : 0;
    double fb = dv.have_roof && dv.roof.copy_gbs > 0 ? cr.gbs / dv.roof.copy_gbs : 0;

    printf("%-11s %-9s %-4s %-5s %4u %7u %4u %4u %4u %-7s ", c->op->name,
           vkla_form_name(c->form), c->bwd ? "bwd" : "fwd", vkla_dtype_name(c->dtype), c->B,
           c->T, c->H, c->K, c->V, c->gate);
    const char *chk = cr.checked == 1 ? "PASS" : cr.checked == -1 ? "FAIL" : "-";
    if (cr.status == 0) {
      char pf[16], pb[16];
      fmt_pct(pf, sizeof pf, ff, dv.have_roof);
      fmt_pct(pb, sizeof pb, fb, dv.have_roof);
      printf("%11.1f %11.1f %11.1f %10.3e %9.2f %6s %8.2f %6s %5s\n", cr.med, cr.mn, cr.mx,
             cr.tok_s, cr.gflops, pf, cr.gbs, pb, chk);
      if (cr.have_kern)
        bench_kernels_print(stdout, &cr.kern);
      ran++;
    } else {
      printf("%s: %s\n", cr.status == 1 ? "unsupported" : "error", cr.reason);
    }
    fflush(stdout);
    if (cr.status == 2 || cr.checked == -1)
      failures++;
    if (jf)
      json_case(jf, c, &cr, &cfg, &dv, ff, fb);
    to_rec(c, &cr, &dv, ff, fb, &recs[ci]);
  }
  if (!quiet)
    fprintf(stderr, PROG ": %d case%s (%d timed) in %.1f s\n", cl.n, cl.n == 1 ? "" : "s", ran,
            now_s() - t_start);

  free(times);
  vkla_context_destroy(ctx);
  int rc = failures ? 1 : 0;
  if (jf && fclose(jf) != 0) {
    fprintf(stderr, PROG ": --json: write error on %s\n", json_path);
    rc = 2;
  }
  if (svg_path) {
    char err[1024], sub[1024];
    snprintf(sub, sizeof sub, "%s | %s | commit %s%s%s", dv.info.name, dv.info.driver_info,
             VKLA_COMMIT, dv.suite ? " | suite " : "", dv.suite ? dv.suite : "");
    if (bench_write_svg(svg_path, recs, cl.n, sub, err, sizeof err) != 0) {
      fprintf(stderr, PROG ": --svg: %s\n", err);
      rc = rc ? rc : 2;
    } else if (!quiet) {
      fprintf(stderr, PROG ": wrote %s\n", svg_path);
    }
  }
  free(recs);
  free(cl.c);
  free(sel.ops.store);
  free(sel.forms.store);
  free(sel.dtypes.store);
  free(sel.gates.store);
  free(sel.passes.store);
  if (failures)
    fprintf(stderr, PROG ": %d case(s) failed\n", failures);
  return rc;
}
