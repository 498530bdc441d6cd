/*
 * vkla-run - run one vkla op on .npy inputs and write its outputs (SPEC: "The command-line
 * contract - vkla-run").
 *
 *   vkla-run OP [--form FORM] [--dtype f32|f16|bf16] [--chunk C] [--scale S] [--normalize]
 *               [--eps E] [--l2norm] [--backward] [--device SEL] [--check] [--quiet]
 *               --in DIR --out DIR
 *
 * With --backward it also reads do.npy (required) and dht.npy (optional, causal ops), runs the
 * op's backward pass and writes the gradient of every input given (dq.npy dk.npy dv.npy, and
 * dg dg_gamma dgk dbeta dh0 for each of g g_gamma gk beta h0 that was given).
 *
 * Exit status: 0 success, 1 --check failed (outputs are still written), 2 bad input or device
 * error (one line "vkla-run: <file or option>: <problem>" on stderr, no output file written).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common.h"

#define PROG "vkla-run"

static void usage(FILE *f)
{
  char ops[256];
  tool_op_names_text(ops, sizeof ops);
  fprintf(f,
          "usage: " PROG " OP [--form FORM] [--dtype f32|f16|bf16] [--chunk C] [--scale S]\n"
          "                [--normalize] [--eps E] [--l2norm] [--backward] [--device SEL] [--check]\n"
          "                [--quiet] --in DIR --out DIR\n"
          "\n"
          "OP: %s. FORM: chunk (default) or recurrent for the causal ops;\n"
          "chunk (default), attn or rnn for lion.\n"
          "Reads q k v and the optional g g_gamma gk beta h0 (float32) and cu_seqlens (int32 or\n"
          "int64) .npy files from --in; writes o.npy (and ht.npy for the causal ops) to --out.\n"
          "--backward also reads do.npy (required) and dht.npy (optional, causal ops) and writes\n"
          "the gradients dq.npy dk.npy dv.npy, plus dg dg_gamma dgk dbeta dh0 .npy for each of\n"
          "g g_gamma gk beta h0 that was given.\n"
          "--check compares with the float64 CPU reference (exit 1 when above the target).\n"
          "Exit status: 0 ok, 1 check failed, 2 bad input or device error.\n",
          ops);
}

static int die(const tool_err *e)
{
  fprintf(stderr, PROG ": %s: %s\n", e->where, e->what);
  return 2;
}

/* mkdir -p; records the directories it created (to remove them on failure) */
typedef struct made_dirs {
  char *path[64];
  int n;
} made_dirs;

static void made_dirs_undo(made_dirs *m)
{
  for (int i = m->n - 1; i >= 0; i--) {
    rmdir(m->path[i]);
    free(m->path[i]);
  }
  m->n = 0;
}

static void made_dirs_keep(made_dirs *m)
{
  for (int i = 0; i < m->n; i++)
    free(m->path[i]);
  m->n = 0;
}

static int mkdir_p(const char *dir, made_dirs *m, tool_err *e)
{
  size_t n = strlen(dir);
  char *buf = malloc(n + 1);
  if (!buf)
    return tool_fail(e, "--out", "out of memory");
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0)
      continue;
    if (buf[i - 1] == '/')
      continue;
    char c = buf[i];
    buf[i] = 0;
    struct stat st;
    if (stat(buf, &st) != 0) {
      if (mkdir(buf, 0777) != 0) {
        tool_fail(e, "--out", "cannot create %s: %s", buf, strerror(errno));
        free(buf);
        return -1;
      }
      if (m->n < 64)
        m->path[m->n++] = strdup(buf);
    } else if (!S_ISDIR(st.st_mode)) {
      tool_fail(e, "--out", "%s is not a directory", buf);
      free(buf);
      return -1;
    }
    buf[i] = c;
  }
  free(buf);
  return 0;
}

/* Writes the outputs under temporary names and renames them only when all were written. */
#define MAX_OUT_FILES (2 + TI_GRADS)

static int write_outputs(const char *dir, int nfiles, const char *const *names,
                         const float *const *data, const int *ndims,
                         const int64_t (*shapes)[4], tool_err *e)
{
  made_dirs m;
  memset(&m, 0, sizeof m);
  if (mkdir_p(dir, &m, e) != 0) {
    made_dirs_undo(&m);
    return -1;
  }
  static char tmp[MAX_OUT_FILES][4096], fin[MAX_OUT_FILES][4096];
  char err[512];
  int written = 0, rc = -1;
  for (int i = 0; i < nfiles; i++) {
    snprintf(tmp[i], sizeof tmp[i], "%s/.%s.npy.%s.%ld", dir, names[i], PROG, (long)getpid());
    snprintf(fin[i], sizeof fin[i], "%s/%s.npy", dir, names[i]);
  }
  for (; written < nfiles; written++)
    if (npy_write_f32(tmp[written], data[written], ndims[written], shapes[written], err,
                      sizeof err) != 0) {
      char where[64];
      snprintf(where, sizeof where, "%s.npy", names[written]);
      tool_fail(e, where, "%s", err);
      goto done;
    }
  int renamed = 0;
  for (; renamed < nfiles; renamed++)
    if (rename(tmp[renamed], fin[renamed]) != 0) {
      char where[64];
      snprintf(where, sizeof where, "%s.npy", names[renamed]);
      tool_fail(e, where, "cannot rename %s: %s", tmp[renamed], strerror(errno));
      for (int j = 0; j < renamed; j++)
        remove(fin[j]);
      goto done;
    }
  written = 0;
  rc = 0;
done:
  for (int i = 0; i < written; i++)
    remove(tmp[i]);
  if (rc == 0)
    made_dirs_keep(&m);
  else
    made_dirs_undo(&m);
  return rc;
}

static const char *need_value(int argc, char **argv, int *i, tool_err *e)
{
  if (*i + 1 >= argc) {
    tool_fail(e, argv[*i], "missing value");
    return NULL;
  }
  return argv[++*i];
}

int main(int argc, char **argv)
{
  tool_err e;
  memset(&e, 0, sizeof e);
  const char *opname = NULL, *in = NULL, *out = NULL, *device = NULL;
  tool_opts o;
  memset(&o, 0, sizeof o);
  o.form = VKLA_FORM_DEFAULT;
  o.dtype = VKLA_DTYPE_F32;
  uint32_t given = 0;
  int check = 0, quiet = 0, backward = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--form") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (tool_parse_form(v, &o.form) != 0) {
        tool_fail(&e, "--form", "unknown form '%s' (chunk, recurrent, attn, rnn)", v);
        return die(&e);
      }
    } else if (strcmp(a, "--dtype") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (tool_parse_dtype(v, &o.dtype) != 0) {
        tool_fail(&e, "--dtype", "unknown dtype '%s' (f32, f16, bf16)", v);
        return die(&e);
      }
    } else if (strcmp(a, "--chunk") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (tool_parse_u32(v, &o.chunk) != 0 || o.chunk == 0) {
        tool_fail(&e, "--chunk", "'%s' is not a positive integer", v);
        return die(&e);
      }
      given |= TOPT_CHUNK;
    } else if (strcmp(a, "--scale") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (tool_parse_float(v, &o.scale) != 0 || o.scale == 0.0f) {
        tool_fail(&e, "--scale", "'%s' is not a finite nonzero number", v);
        return die(&e);
      }
      given |= TOPT_SCALE;
    } else if (strcmp(a, "--eps") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (tool_parse_float(v, &o.eps) != 0 || !(o.eps > 0.0f)) {
        tool_fail(&e, "--eps", "'%s' is not a finite positive number", v);
        return die(&e);
      }
      given |= TOPT_EPS;
    } else if (strcmp(a, "--normalize") == 0) {
      o.normalize = 1;
      given |= TOPT_NORMALIZE;
    } else if (strcmp(a, "--l2norm") == 0) {
      o.l2norm = 1;
      given |= TOPT_L2NORM;
    } else if (strcmp(a, "--device") == 0) {
      if (!(v = need_value(argc, argv, &i, &e)))
        return die(&e);
      if (!*v) {
        tool_fail(&e, "--device", "empty device selector");
        return die(&e);
      }
      device = v;
    } else if (strcmp(a, "--in") == 0) {
      if (!(in = need_value(argc, argv, &i, &e)))
        return die(&e);
    } else if (strcmp(a, "--out") == 0) {
      if (!(out = need_value(argc, argv, &i, &e)))
        return die(&e);
    } else if (strcmp(a, "--check") == 0) {
      check = 1;
    } else if (strcmp(a, "--backward") == 0) {
      backward = 1;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      quiet = 1;
    } else if (a[0] == '-' && a[1] != 0) {
      tool_fail(&e, a, "unknown option (see " PROG " --help)");
      return die(&e);
    } else if (!opname) {
      opname = a;
    } else {
      tool_fail(&e, a, "unexpected argument (the op is already '%s')", opname);
      return die(&e);
    }
  }

  if (!opname) {
    tool_fail(&e, "OP", "missing (usage: " PROG " OP [options] --in DIR --out DIR)");
    return die(&e);
  }
  const tool_op *op = tool_find_op(opname);
  if (!op) {
    char ops[256];
    tool_op_names_text(ops, sizeof ops);
    tool_fail(&e, opname, "unknown op (%s)", ops);
    return die(&e);
  }
  if (!in) {
    tool_fail(&e, "--in", "missing (the input directory is required)");
    return die(&e);
  }
  if (!out) {
    tool_fail(&e, "--out", "missing (the output directory is required)");
    return die(&e);
  }
  if (!*in || !*out) {
    tool_fail(&e, !*in ? "--in" : "--out", "empty path");
    return die(&e);
  }
  if (tool_check_opts(op, &o, given, &e) != 0)
    return die(&e);
  if (!op->exec || (backward && !op->exec_bwd)) {
    tool_fail(&e, op->name, "%snot available in this build of vkla",
              op->exec ? "the backward pass is " : "");
    return die(&e);
  }
  {
    struct stat st;
    if (stat(out, &st) == 0 && !S_ISDIR(st.st_mode)) {
      tool_fail(&e, "--out", "%s exists and is not a directory", out);
      return die(&e);
    }
  }

  tool_problem p;
  if (tool_load_problem(op, in, o.dtype, backward, &p, &e) != 0)
    return die(&e);
  tool_resolve_opts(op, &p, &o);

  int rc = 2;
  vkla_context *ctx = NULL;
  tool_dev d;
  memset(&d, 0, sizeof d);
  float *res_o = NULL, *res_ht = NULL, *res_g[TI_GRADS] = {0};
  size_t no = tool_output_count(&p), ns = op->causal ? tool_state_count(&p) : 0;
  res_o = malloc((no ? no : 1) * sizeof(float));
  res_ht = op->causal ? malloc((ns ? ns : 1) * sizeof(float)) : NULL;
  if (!res_o || (op->causal && !res_ht)) {
    tool_fail(&e, "memory", "cannot allocate the outputs");
    goto fail;
  }
  for (int i = 0; backward && i < TI_GRADS; i++) {
    size_t n = tool_input_count(&p, i);
    if (p.x[i] && !(res_g[i] = malloc((n ? n : 1) * sizeof(float)))) {
      tool_fail(&e, "memory", "cannot allocate the gradients");
      goto fail;
    }
  }
  if (tool_context_create(device, &ctx, &e) != 0)
    goto fail;
  if (tool_dev_create(ctx, op, &p, &o, 1, &d, &e) != 0)
    goto fail;
  vkla_result r = op->exec(ctx, &d, &o, 0, 0, NULL);
  if (r != VKLA_SUCCESS) {
    tool_lib_fail(ctx, r, op->name, &e);
    goto fail;
  }
  if (tool_dev_download(ctx, &d, res_o, res_ht, &e) != 0)
    goto fail;
  if (backward) {
    if (tool_dev_alloc_grads(ctx, &p, &o, &d, &e) != 0)
      goto fail;
    if ((r = op->exec_bwd(ctx, &d, &o, 0, 0, NULL)) != VKLA_SUCCESS) {
      char where[64];
      snprintf(where, sizeof where, "%s_backward", op->name);
      tool_lib_fail(ctx, r, where, &e);
      goto fail;
    }
    if (tool_dev_download_grads(ctx, &d, &p, res_g, &e) != 0)
      goto fail;
  }
  vkla_device_info info;
  memset(&info, 0, sizeof info);
  vkla_context_device_info(ctx, &info);
  tool_dev_destroy(ctx, &d);
  vkla_context_destroy(ctx);
  ctx = NULL;

  tool_check c;
  tool_grad_check gc;
  memset(&c, 0, sizeof c);
  memset(&gc, 0, sizeof gc);
  if (check && tool_check_results(op, &p, &o, res_o, res_ht, &c, &e) != 0)
    goto fail;
  if (check && backward &&
      tool_check_grads(op, &p, &o, (const float *const *)res_g, &gc, &e) != 0)
    goto fail;

  {
    char gname[TI_GRADS][32];
    const char *names[MAX_OUT_FILES] = {"o", "ht"};
    const float *data[MAX_OUT_FILES] = {res_o, res_ht};
    int ndims[MAX_OUT_FILES] = {4, 4};
    int64_t shapes[MAX_OUT_FILES][4] = {{p.B, p.T, p.HV, p.V}, {p.N, p.HV, p.K, p.V}};
    int nfiles = op->causal ? 2 : 1;
    for (int i = 0; i < TI_GRADS; i++) {
      if (!res_g[i])
        continue;
      snprintf(gname[i], sizeof gname[i], "d%s", tool_input_names[i]);
      names[nfiles] = gname[i];
      data[nfiles] = res_g[i];
      ndims[nfiles] = tool_input_shape(&p, i, shapes[nfiles]);
      nfiles++;
    }
    if (write_outputs(out, nfiles, names, data, ndims, (const int64_t(*)[4])shapes, &e) != 0)
      goto fail;
  }

  rc = 0;
  if (!quiet)
    fprintf(stderr, PROG ": %s %s %s B=%lld T=%lld H=%lld K=%lld V=%lld N=%lld on %s: wrote %s/o.npy%s%s%s\n",
            op->name, vkla_form_name(o.form), vkla_dtype_name(o.dtype), (long long)p.B,
            (long long)p.T, (long long)p.HV, (long long)p.K, (long long)p.V, (long long)p.N,
            info.name, out, op->causal ? ", " : "", op->causal ? out : "",
            op->causal ? "/ht.npy" : "");
  if (!quiet && backward)
    fprintf(stderr, PROG ": backward: wrote the gradients of %s to %s\n",
            op->causal ? "L = sum(do * o) + sum(dht * ht)" : "L = sum(do * o)", out);
  if (check) {
    if (!quiet || !c.pass_o)
      fprintf(stderr, PROG ": check: o: nmse %.3e %s target %.2e %s%s\n", c.nmse_o,
              c.nmse_o <= c.target_o ? "<=" : ">", c.target_o, c.pass_o ? "PASS" : "FAIL",
              c.finite_o ? "" : " (non-finite values)");
    if (c.has_ht && (!quiet || !c.pass_ht))
      fprintf(stderr, PROG ": check: ht: nmse %.3e %s target %.2e %s%s\n", c.nmse_ht,
              c.nmse_ht <= c.target_ht ? "<=" : ">", c.target_ht, c.pass_ht ? "PASS" : "FAIL",
              c.finite_ht ? "" : " (non-finite values)");
    for (int i = 0; backward && i < TI_GRADS; i++)
      if (gc.has[i] && (!quiet || !gc.pass_one[i]))
        fprintf(stderr, PROG ": check: d%s: nmse %.3e %s target %.2e %s%s\n",
                tool_input_names[i], gc.nmse[i], gc.nmse[i] <= gc.target[i] ? "<=" : ">",
                gc.target[i], gc.pass_one[i] ? "PASS" : "FAIL",
                gc.finite[i] ? "" : " (non-finite values)");
    if (!c.pass || (backward && !gc.pass))
      rc = 1;
  }
  free(res_o);
  free(res_ht);
  for (int i = 0; i < TI_GRADS; i++)
    free(res_g[i]);
  tool_problem_free(&p);
  return rc;

fail:
  if (ctx) {
    tool_dev_destroy(ctx, &d);
    vkla_context_destroy(ctx);
  }
  free(res_o);
  free(res_ht);
  for (int i = 0; i < TI_GRADS; i++)
    free(res_g[i]);
  tool_problem_free(&p);
  return die(&e);
}
