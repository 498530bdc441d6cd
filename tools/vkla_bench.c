/*
 * vkla-bench - GPU-timestamped benchmark of the vkla ops (SPEC: "The benchmark contract").
 *
 *   vkla-bench [--op OPS] [--form FORMS] [--dtype DTYPES] [--B N] [--T NS] [--H N] [--K N]
 *              [--V N] [--gate none|g|g_gamma|gk] [--reps N] [--warmup N] [--chunk C]
 *              [--check] [--json FILE] [--device SEL]
 *
 * Every option takes a comma-separated list; the cases are the cartesian product, run in one
 * process on one device. The FLOP and byte models are described in docs/bench.md.
 * Exit status: 0 ok, 1 a case failed its check or errored, 2 bad arguments or no device.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "vkla_ref.h"

#ifndef VKLA_COMMIT
#define VKLA_COMMIT "unknown"
#endif

#define PROG "vkla-bench"
#define MAX_LIST 64
/* keep the float64 reference of --check around a second: larger cases check a prefix */
#define CHECK_BUDGET 4.0e8

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

typedef struct caseres {
  int status;               /* 0 ok, 1 unsupported, 2 error */
  char reason[1536];
  double med, mn, mx, tok_s, gflops, gbs, flops, bytes;
  int checked;              /* 0 no check, 1 PASS, -1 FAIL, 2 skipped */
  tool_check chk;
  int64_t check_B, check_T;
} caseres;

static void print_header(void)
{
  printf("%-11s %-9s %-5s %4s %7s %4s %4s %4s %-7s %11s %11s %11s %10s %9s %8s %5s\n", "op",
         "form", "dtype", "B", "T", "H", "K", "V", "gate", "median_us", "min_us", "max_us",
         "tok/s", "GFLOP/s", "GB/s", "check");
  fflush(stdout);
}

static void json_num(FILE *f, const char *key, double v, int valid)
{
  if (valid)
    fprintf(f, ", \"%s\": %.6g", key, v);
  else
    fprintf(f, ", \"%s\": null", key);
}

int main(int argc, char **argv)
{
  strlist ops, forms, dtypes, gates;
  u32list Bs, Ts, Hs, Ks, Vs;
  memset(&ops, 0, sizeof ops);
  memset(&forms, 0, sizeof forms);
  memset(&dtypes, 0, sizeof dtypes);
  memset(&gates, 0, sizeof gates);
  if (split("--op", "linear_attn", &ops) || split("--form", "chunk,recurrent", &forms) ||
      split("--dtype", "f32", &dtypes) || split("--gate", "g", &gates))
    return 2;
  Bs.n = Ts.n = Hs.n = Ks.n = Vs.n = 1;
  Bs.v[0] = 1;
  Ts.v[0] = 1024;
  Hs.v[0] = 4;
  Ks.v[0] = 64;
  Vs.v[0] = 64;
  uint32_t reps = 10, warmup = 2, chunk = 0;
  const char *json_path = NULL, *device = NULL;
  int check = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      printf("usage: " PROG " [--op OPS] [--form FORMS] [--dtype DTYPES] [--B N] [--T NS] [--H N]\n"
             "                  [--K N] [--V N] [--gate none|g|g_gamma|gk] [--reps N] [--warmup N]\n"
             "                  [--chunk C] [--check] [--json FILE] [--device SEL]\n"
             "Lists are comma-separated (T accepts a k suffix: 4k = 4096); all combinations run.\n"
             "Defaults: --op linear_attn --form chunk,recurrent --dtype f32 --B 1 --T 1024 --H 4\n"
             "          --K 64 --V 64 --gate g --reps 10 --warmup 2\n"
             "Times are GPU timestamps around the op's dispatches (median, min, max over reps).\n"
             "GFLOP/s and GB/s follow the models of docs/bench.md. --check compares one run with\n"
             "the float64 reference first (large cases: the first sequence's prefix).\n");
      return 0;
    }
    if (strcmp(a, "--check") == 0) {
      check = 1;
      continue;
    }
    if (a[0] != '-' || !(strcmp(a, "--op") == 0 || strcmp(a, "--form") == 0 ||
                         strcmp(a, "--dtype") == 0 || strcmp(a, "--B") == 0 ||
                         strcmp(a, "--T") == 0 || strcmp(a, "--H") == 0 ||
                         strcmp(a, "--K") == 0 || strcmp(a, "--V") == 0 ||
                         strcmp(a, "--gate") == 0 || strcmp(a, "--reps") == 0 ||
                         strcmp(a, "--warmup") == 0 || strcmp(a, "--json") == 0 ||
                         strcmp(a, "--device") == 0 || strcmp(a, "--chunk") == 0))
      return die(a, a[0] == '-' ? "unknown option (see " PROG " --help)" : "unexpected argument");
    if (i + 1 >= argc || !*argv[i + 1])
      return die(a, "missing value");
    const char *v = argv[++i];
    int rc = 0;
    if (strcmp(a, "--op") == 0)
      rc = split(a, v, &ops);
    else if (strcmp(a, "--form") == 0)
      rc = split(a, v, &forms);
    else if (strcmp(a, "--dtype") == 0)
      rc = split(a, v, &dtypes);
    else if (strcmp(a, "--gate") == 0)
      rc = split(a, v, &gates);
    else if (strcmp(a, "--B") == 0)
      rc = parse_u32list(a, v, &Bs, 0);
    else if (strcmp(a, "--T") == 0)
      rc = parse_u32list(a, v, &Ts, 0);
    else if (strcmp(a, "--H") == 0)
      rc = parse_u32list(a, v, &Hs, 0);
    else if (strcmp(a, "--K") == 0)
      rc = parse_u32list(a, v, &Ks, 0);
    else if (strcmp(a, "--V") == 0)
      rc = parse_u32list(a, v, &Vs, 0);
    else if (strcmp(a, "--reps") == 0) {
      if (tool_parse_u32(v, &reps) != 0 || reps == 0 || reps > 100000)
        rc = die(a, "must be an integer from 1 to 100000");
    } else if (strcmp(a, "--warmup") == 0) {
      if (tool_parse_u32(v, &warmup) != 0 || warmup > 100000)
        rc = die(a, "must be an integer from 0 to 100000");
    } else if (strcmp(a, "--chunk") == 0) {
      if (tool_parse_u32(v, &chunk) != 0 || chunk == 0)
        rc = die(a, "must be a positive integer");
    } else if (strcmp(a, "--json") == 0)
      json_path = v;
    else if (strcmp(a, "--device") == 0)
      device = v;
    if (rc)
      return rc;
  }

  /* names are checked up front: a typo is an error, not an "unsupported" row */
  for (int i = 0; i < ops.n; i++)
    if (!tool_find_op(ops.item[i])) {
      char names[256], msg[512];
      tool_op_names_text(names, sizeof names);
      snprintf(msg, sizeof msg, "unknown op '%s' (%s)", ops.item[i], names);
      return die("--op", msg);
    }
  for (int i = 0; i < forms.n; i++) {
    vkla_form f;
    if (tool_parse_form(forms.item[i], &f) != 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown form '%s' (chunk, recurrent, attn, rnn)", forms.item[i]);
      return die("--form", msg);
    }
  }
  for (int i = 0; i < dtypes.n; i++) {
    vkla_dtype d;
    if (tool_parse_dtype(dtypes.item[i], &d) != 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown dtype '%s' (f32, f16, bf16)", dtypes.item[i]);
      return die("--dtype", msg);
    }
  }
  for (int i = 0; i < gates.n; i++) {
    const char *g = gates.item[i];
    if (strcmp(g, "none") && strcmp(g, "g") && strcmp(g, "g_gamma") && strcmp(g, "gk")) {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown gate '%s' (none, g, g_gamma, gk)", g);
      return die("--gate", msg);
    }
  }

  FILE *jf = NULL;
  if (json_path) {
    jf = fopen(json_path, "w");
    if (!jf) {
      char msg[512];
      snprintf(msg, sizeof msg, "cannot open %s: %s", json_path, strerror(errno));
      return die("--json", msg);
    }
  }

  tool_err e;
  vkla_context *ctx = NULL;
  if (tool_context_create(device, &ctx, &e) != 0) {
    if (jf)
      fclose(jf);
    return die(e.where, e.what);
  }
  vkla_device_info info;
  memset(&info, 0, sizeof info);
  vkla_context_device_info(ctx, &info);
  char api[32];
  snprintf(api, sizeof api, "%u.%u.%u", VK_API_VERSION_MAJOR(info.api_version),
           VK_API_VERSION_MINOR(info.api_version), VK_API_VERSION_PATCH(info.api_version));
  fprintf(stderr, PROG ": device %s (%s %s), variant %s, commit %s\n", info.name,
          info.driver_name, info.driver_info, info.variant, VKLA_COMMIT);

  int total = ops.n * forms.n * dtypes.n * Bs.n * Ts.n * Hs.n * Ks.n * Vs.n * gates.n;
  int idx = 0, failures = 0;
  double *times = malloc(reps * sizeof(double));
  if (!times) {
    vkla_context_destroy(ctx);
    if (jf)
      fclose(jf);
    return die("memory", "out of host memory");
  }
  print_header();

  for (int io = 0; io < ops.n; io++)
  for (int iform = 0; iform < forms.n; iform++)
  for (int id = 0; id < dtypes.n; id++)
  for (int ib = 0; ib < Bs.n; ib++)
  for (int it = 0; it < Ts.n; it++)
  for (int ih = 0; ih < Hs.n; ih++)
  for (int ik = 0; ik < Ks.n; ik++)
  for (int iv = 0; iv < Vs.n; iv++)
  for (int ig = 0; ig < gates.n; ig++) {
    const tool_op *op = tool_find_op(ops.item[io]);
    const char *gate = gates.item[ig];
    uint32_t B = Bs.v[ib], T = Ts.v[it], H = Hs.v[ih], K = Ks.v[ik], V = Vs.v[iv];
    tool_opts o;
    memset(&o, 0, sizeof o);
    tool_parse_form(forms.item[iform], &o.form);
    tool_parse_dtype(dtypes.item[id], &o.dtype);
    o.chunk = chunk;
    idx++;
    fprintf(stderr, PROG ": [%d/%d] %s %s %s B=%u T=%u H=%u K=%u V=%u gate=%s\n", idx, total,
            op->name, vkla_form_name(o.form), vkla_dtype_name(o.dtype), B, T, H, K, V, gate);

    caseres cr;
    memset(&cr, 0, sizeof cr);
    tool_problem p;
    memset(&p, 0, sizeof p);
    tool_dev d;
    memset(&d, 0, sizeof d);
    int gi = strcmp(gate, "g") == 0 ? TI_G : strcmp(gate, "g_gamma") == 0 ? TI_G_GAMMA
           : strcmp(gate, "gk") == 0 ? TI_GK : -1;

    if (!op->exec) {
      cr.status = 1;
      snprintf(cr.reason, sizeof cr.reason, "%s is not available in this build of vkla", op->name);
    } else if (!(op->forms & TOOL_FORM_BIT(o.form))) {
      char f[128];
      tool_op_forms_text(op, f, sizeof f);
      cr.status = 1;
      snprintf(cr.reason, sizeof cr.reason, "%s has no form %s (%s)", op->name,
               vkla_form_name(o.form), f);
    } else if (gi >= 0 && !((op->required | op->optional) & TI_BIT(gi))) {
      cr.status = 1;
      snprintf(cr.reason, sizeof cr.reason, "%s takes no %s gate", op->name, gate);
    } else if ((uint64_t)B * T > INT32_MAX || (uint64_t)B * T * H * (K > V ? K : V) > (1ull << 34)) {
      cr.status = 1;
      snprintf(cr.reason, sizeof cr.reason, "problem too large for this tool");
    } else if (tool_random_problem(op, B, T, H, K, V, gate, o.dtype,
                                   hash_case(op->name, B, T, H, K, V, gate), &p, &e) != 0) {
      cr.status = 2;
      snprintf(cr.reason, sizeof cr.reason, "%s: %s", e.where, e.what);
    }

    if (cr.status == 0) {
      tool_resolve_opts(op, &p, &o);
      vkla_result r = VKLA_SUCCESS;
      const char *stage = NULL;
      if (tool_dev_create(ctx, op, &p, &o, 1, &d, &e) != 0) {
        stage = "upload";
      } else if (check) {
        /* the reference is O(T K V) (causal) or O(T^2) (lion): check a prefix of the first
         * sequence when the whole problem would take too long */
        tool_problem cp = p;
        int sliced = 0;
        if (op->ref_cost(&p) > CHECK_BUDGET) {
          int64_t t = p.T;
          cp = tool_problem_prefix(&p, t);
          while (t > 1 && op->ref_cost(&cp) > CHECK_BUDGET) {
            t /= 2;
            cp = tool_problem_prefix(&p, t);
          }
          sliced = 1;
        }
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
        if (!stage && tool_check_results(op, &cp, &o, ro, rh, &cr.chk, &e) != 0)
          stage = "check";
        if (!stage) {
          cr.checked = cr.chk.pass ? 1 : -1;
          cr.check_B = cp.B;
          cr.check_T = cp.T;
          if (sliced)
            fprintf(stderr, PROG ":   check on the first sequence, B=1 T=%lld\n", (long long)cp.T);
          fprintf(stderr, PROG ":   check: o nmse %.3e (target %.2e)", cr.chk.nmse_o, cr.chk.target_o);
          if (cr.chk.has_ht)
            fprintf(stderr, ", ht nmse %.3e (target %.2e)", cr.chk.nmse_ht, cr.chk.target_ht);
          fprintf(stderr, ": %s\n", cr.chk.pass ? "PASS" : "FAIL");
        }
        free(ro);
        free(rh);
        if (sliced)
          tool_dev_destroy(ctx, &cd);
      }
      if (!stage && (r = op->exec(ctx, &d, &o, warmup, reps, times)) != VKLA_SUCCESS)
        stage = "bench";
      if (stage) {
        if (r != VKLA_SUCCESS)
          tool_lib_fail(ctx, r, op->name, &e);
        cr.status = r == VKLA_ERROR_UNSUPPORTED ? 1 : 2;
        snprintf(cr.reason, sizeof cr.reason, "%s", e.what);
      } else {
        qsort(times, reps, sizeof(double), cmp_double);
        cr.med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
        cr.mn = times[0];
        cr.mx = times[reps - 1];
        op->model(&p, &o, op->causal, &cr.flops, &cr.bytes);
        double sec = cr.med * 1e-6;
        cr.tok_s = sec > 0 ? (double)B * T / sec : 0;
        cr.gflops = sec > 0 ? cr.flops / sec * 1e-9 : 0;
        cr.gbs = sec > 0 ? cr.bytes / sec * 1e-9 : 0;
      }
      tool_dev_destroy(ctx, &d);
    }
    tool_problem_free(&p);

    /* console row */
    printf("%-11s %-9s %-5s %4u %7u %4u %4u %4u %-7s ", op->name, vkla_form_name(o.form),
           vkla_dtype_name(o.dtype), B, T, H, K, V, gate);
    const char *chk = cr.checked == 1 ? "PASS" : cr.checked == -1 ? "FAIL" : "-";
    if (cr.status == 0)
      printf("%11.1f %11.1f %11.1f %10.3e %9.2f %8.2f %5s\n", cr.med, cr.mn, cr.mx, cr.tok_s,
             cr.gflops, cr.gbs, chk);
    else
      printf("%s: %s\n", cr.status == 1 ? "unsupported" : "error", cr.reason);
    fflush(stdout);
    if (cr.status == 2 || cr.checked == -1)
      failures++;

    if (jf) {
      fprintf(jf, "{\"op\": \"%s\", \"form\": \"%s\", \"dtype\": \"%s\"", op->name,
              vkla_form_name(o.form), vkla_dtype_name(o.dtype));
      fprintf(jf, ", \"B\": %u, \"T\": %u, \"H\": %u, \"K\": %u, \"V\": %u, \"gate\": \"%s\"", B, T,
              H, K, V, gate);
      fprintf(jf, ", \"chunk\": %u, \"reps\": %u, \"warmup\": %u", chunk ? chunk : 64, reps, warmup);
      fprintf(jf, ", \"status\": \"%s\"",
              cr.status == 0 ? "ok" : cr.status == 1 ? "unsupported" : "error");
      if (cr.status) {
        fprintf(jf, ", \"reason\": ");
        tool_json_string(jf, cr.reason);
      }
      int ok = cr.status == 0;
      json_num(jf, "time_us_median", cr.med, ok);
      json_num(jf, "time_us_min", cr.mn, ok);
      json_num(jf, "time_us_max", cr.mx, ok);
      json_num(jf, "tokens_per_s", cr.tok_s, ok);
      json_num(jf, "gflops", cr.gflops, ok);
      json_num(jf, "gbs", cr.gbs, ok);
      json_num(jf, "flops", cr.flops, ok);
      json_num(jf, "bytes", cr.bytes, ok);
      fprintf(jf, ", \"check\": ");
      if (cr.checked)
        fprintf(jf, "\"%s\"", chk);
      else
        fprintf(jf, "null");
      json_num(jf, "nmse_o", cr.chk.nmse_o, cr.checked != 0);
      json_num(jf, "nmse_ht", cr.chk.nmse_ht, cr.checked != 0 && cr.chk.has_ht);
      json_num(jf, "check_B", (double)cr.check_B, cr.checked != 0);
      json_num(jf, "check_T", (double)cr.check_T, cr.checked != 0);
      fprintf(jf, ", \"device_name\": ");
      tool_json_string(jf, info.name);
      fprintf(jf, ", \"vendor_id\": %u, \"device_id\": %u, \"driver_name\": ", info.vendor_id,
              info.device_id);
      tool_json_string(jf, info.driver_name);
      fprintf(jf, ", \"driver_info\": ");
      tool_json_string(jf, info.driver_info);
      fprintf(jf, ", \"api_version\": \"%s\", \"variant\": ", api);
      tool_json_string(jf, info.variant);
      fprintf(jf, ", \"commit\": ");
      tool_json_string(jf, VKLA_COMMIT);
      fprintf(jf, "}\n");
      fflush(jf);
    }
  }

  free(times);
  vkla_context_destroy(ctx);
  int rc = failures ? 1 : 0;
  if (jf && fclose(jf) != 0) {
    fprintf(stderr, PROG ": --json: write error on %s\n", json_path);
    rc = 2;
  }
  free(ops.store);
  free(forms.store);
  free(dtypes.store);
  free(gates.store);
  if (failures)
    fprintf(stderr, PROG ": %d case(s) failed\n", failures);
  return rc;
}
