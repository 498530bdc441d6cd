/*
 * common.h - shared code of the vkla command-line tools (vkla-run, vkla-bench, vkla-info).
 *
 * The heart of it is the op adapter table (tool_ops[]): one entry per operator that says which
 * forms, inputs and options the op takes, how to run it on the device from a set of uploaded
 * tensors (exec), how to compute its float64 reference (reference), and the FLOP/byte model of
 * vkla-bench (model, documented in docs/bench.md). Everything else here is op-independent:
 * loading and validating .npy inputs, random inputs, uploads and downloads, accuracy checks.
 *
 * Adding an op: write its exec, reference and model functions in common.c (each fills the op's
 * args struct from the tool_dev tensors or the problem's arrays) and, for its backward pass,
 * exec_bwd / ref_bwd / model_bwd; then add the table entry.
 */
#ifndef VKLA_TOOLS_COMMON_H
#define VKLA_TOOLS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "npy.h"
#include "vkla.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------
 * Errors: "where" is a file ("q.npy"), an option ("--chunk") or an op name; "what" the problem.
 * Tools print them as "<tool>: <where>: <what>".
 * ---------------------------------------------------------------------------------------- */
typedef struct tool_err {
  char where[256];
  char what[1024];
} tool_err;

/* Fills e (if not NULL) and returns -1. */
int tool_fail(tool_err *e, const char *where, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ------------------------------------------------------------------------------------------
 * Inputs of the ops (the SPEC file list). Shapes, in terms of the problem dims:
 *   q, k [B,T,H,K]   v [B,T,HV,V]   g [B,T,HV]   g_gamma [HV]   gk [B,T,H,K]
 *   beta [B,T,HV]    h0 [N,HV,K,V]  cu_seqlens [N+1]
 * HV = H unless the op has grouped value heads (delta_rule).
 * ---------------------------------------------------------------------------------------- */
enum tool_input {
  TI_Q, TI_K, TI_V, TI_G, TI_G_GAMMA, TI_GK, TI_BETA, TI_H0, TI_CU_SEQLENS,
  /* upstream gradients of the backward pass: do [B,T,HV,V] (storage dtype), dht [N,HV,K,V] */
  TI_DO, TI_DHT, TI_COUNT
};
/* Inputs [0, TI_GRADS) have a gradient in the backward pass: "d" + the input's name, with the
 * input's shape (dq dk dv in the storage dtype, the others f32). */
#define TI_GRADS TI_CU_SEQLENS
#define TI_BIT(i) (1u << (i))
extern const char *const tool_input_names[TI_COUNT];

/* options a tool can pass; an op lists those it takes */
enum tool_option {
  TOPT_CHUNK = 1u << 0,
  TOPT_SCALE = 1u << 1,
  TOPT_NORMALIZE = 1u << 2,
  TOPT_EPS = 1u << 3,
  TOPT_L2NORM = 1u << 4
};
#define TOOL_FORM_BIT(f) (1u << (unsigned)(f))

typedef struct tool_opts {
  vkla_form form;    /* resolved: never VKLA_FORM_DEFAULT after tool_resolve_opts */
  vkla_dtype dtype;  /* storage of q, k, v, o */
  uint32_t chunk;    /* 0 = the op's default */
  float scale;       /* 0 = K^-1/2 (tool_resolve_opts fills it in) */
  int normalize;
  float eps;         /* 0 = 1e-6 (tool_resolve_opts fills it in) */
  int l2norm;
} tool_opts;

/* A problem on the host. Float inputs are float32 holding values already representable in the
 * storage dtype for q, k, v (so the device and the reference see the same numbers). */
typedef struct tool_problem {
  int64_t B, T, H, HV, K, V, N;  /* N: number of sequences (= B without cu_seqlens) */
  float *x[TI_COUNT];            /* NULL = absent; x[TI_CU_SEQLENS] is unused */
  int32_t *cu_seqlens;           /* N+1 offsets, or NULL */
  int owns;                      /* tool_problem_free frees the arrays */
} tool_problem;

/* Number of dims and shape of input i (TI_*) for the problem's dims. */
int tool_input_shape(const tool_problem *p, int i, int64_t shape[4]);
size_t tool_input_count(const tool_problem *p, int i);
size_t tool_output_count(const tool_problem *p);  /* o: B*T*HV*V */
size_t tool_state_count(const tool_problem *p);   /* ht: N*HV*K*V */
void tool_problem_free(tool_problem *p);

/* Device side of a problem: one buffer per present input, o, and ht (causal ops). */
typedef struct tool_dev {
  vkla_buffer *buf[TI_COUNT];
  vkla_tensor t[TI_COUNT];       /* absent inputs have buffer NULL */
  vkla_buffer *obuf, *htbuf;
  vkla_tensor o, ht;             /* ht absent unless requested */
  vkla_buffer *gbuf[TI_GRADS];   /* backward: the gradient of each present input */
  vkla_tensor grad[TI_GRADS];    /* absent (buffer NULL) when not allocated */
  const int32_t *cu_seqlens;
  uint32_t num_seqs;
  vkla_dtype dtype;
} tool_dev;

struct tool_op;

/* Runs the op once (times_us == NULL: vkla_X_run) or benchmarks it (vkla_X_bench). */
typedef vkla_result (*tool_exec_fn)(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                                    uint32_t warmup, uint32_t reps, double *times_us);
/* float64 reference into o (tool_output_count) and ht (tool_state_count, may be NULL). 0/-1. */
typedef int (*tool_ref_fn)(const tool_problem *p, const tool_opts *o, double *out, double *ht);
/* FLOP and byte model of one call (docs/bench.md). */
typedef void (*tool_model_fn)(const tool_problem *p, const tool_opts *o, int writes_ht,
                              double *flops, double *bytes);
/* float64 gradients (SPEC section 4) from p->x[TI_DO] and p->x[TI_DHT] (may be NULL):
 * grads[i] (i < TI_GRADS) is filled when not NULL. 0/-1. */
typedef int (*tool_ref_bwd_fn)(const tool_problem *p, const tool_opts *o, double *const *grads);
/* Rough cost of the reference (double flops), to keep vkla-bench --check fast. */
typedef double (*tool_ref_cost_fn)(const tool_problem *p);

typedef struct tool_op {
  const char *name;
  uint32_t forms;          /* TOOL_FORM_BIT mask */
  vkla_form default_form;
  uint32_t required;       /* TI_BIT mask */
  uint32_t optional;       /* TI_BIT mask */
  uint32_t options;        /* TOPT_* mask */
  int causal;              /* has a final state ht (and takes h0 when listed in optional) */
  int grouped_heads;       /* HV may be a multiple of H */
  tool_exec_fn exec;       /* NULL: this build of vkla lacks the op */
  tool_ref_fn reference;
  tool_model_fn model;
  tool_ref_cost_fn ref_cost;
  /* the backward pass (SPEC section 4): exec_bwd runs it from the tool_dev inputs, do and dht
   * into the tool_dev gradient tensors; NULL: this build of vkla lacks it */
  tool_exec_fn exec_bwd;
  tool_ref_bwd_fn ref_bwd;
  tool_model_fn model_bwd;   /* FLOP and byte model of the backward (docs/bench.md) */
} tool_op;

extern const tool_op tool_ops[];
extern const int tool_op_count;
const tool_op *tool_find_op(const char *name);
/* "chunk, recurrent" for messages */
void tool_op_forms_text(const tool_op *op, char *buf, size_t n);
void tool_op_names_text(char *buf, size_t n);

/* Name parsing: 0 ok, -1 unknown. */
int tool_parse_form(const char *s, vkla_form *out);
int tool_parse_dtype(const char *s, vkla_dtype *out);  /* f32, f16, bf16 only */

/* Number parsing (whole string, no junk): 0 ok, -1 bad. */
int tool_parse_u32(const char *s, uint32_t *out);
int tool_parse_float(const char *s, float *out);

/* Checks that the options fit the op (form, option flags) and resolves defaults: form, scale
 * (K^-1/2 as float, needs p->K), eps. which_given: TOPT_* flags the user set explicitly
 * (so e.g. --l2norm for linear_attn is an error). */
int tool_check_opts(const tool_op *op, tool_opts *o, uint32_t which_given, tool_err *e);
void tool_resolve_opts(const tool_op *op, const tool_problem *p, tool_opts *o);

/* Loads the op's inputs from dir (the SPEC files present there), validates ranks, shapes and
 * cu_seqlens, and rounds q, k, v to the storage dtype. Errors name the file. With backward,
 * do.npy is required as well and dht.npy is read when present (causal ops); without it those
 * two files are not looked at. */
int tool_load_problem(const tool_op *op, const char *dir, vkla_dtype dtype, int backward,
                      tool_problem *p, tool_err *e);

/* Random problem for vkla-bench: deterministic for a seed. gate: "none", "g", "g_gamma", "gk".
 * q uniform in [-1, 1), k rows L2-normalized, v uniform in [-1, 1), log gates uniform in
 * [-0.1, 0) (g, gk) or RetNet-style per head (g_gamma), beta uniform in (0.05, 0.95). */
int tool_random_problem(const tool_op *op, int64_t B, int64_t T, int64_t H, int64_t K,
                        int64_t V, const char *gate, vkla_dtype dtype, uint64_t seed,
                        tool_problem *p, tool_err *e);
/* Random upstream gradients for a backward benchmark: do uniform in [-1, 1) (rounded to the
 * storage dtype) and, for the causal ops, dht uniform in [-0.5, 0.5). */
int tool_random_grads(const tool_op *op, tool_problem *p, vkla_dtype dtype, uint64_t seed,
                      tool_err *e);
/* A view of the first sequence of p (batch row 0, first T tokens): B = N = 1, no copies. */
tool_problem tool_problem_prefix(const tool_problem *p, int64_t T);

/* Rounds n float32 values to the storage dtype in place (round to nearest even). */
void tool_round_to_dtype(float *x, size_t n, vkla_dtype dtype);

/* Device side. tool_dev_create uploads (converting q, k, v to the storage dtype) and allocates
 * o and, when want_ht and the op is causal, ht. Errors carry the library message. */
int tool_dev_create(vkla_context *ctx, const tool_op *op, const tool_problem *p,
                    const tool_opts *o, int want_ht, tool_dev *d, tool_err *e);
void tool_dev_destroy(vkla_context *ctx, tool_dev *d);
/* Allocates the gradient of every present input (d->grad[i], i < TI_GRADS). */
int tool_dev_alloc_grads(vkla_context *ctx, const tool_problem *p, const tool_opts *o,
                         tool_dev *d, tool_err *e);
/* Downloads the allocated gradients as float32 into out[i] (tool_input_count(p, i) each). */
int tool_dev_download_grads(vkla_context *ctx, const tool_dev *d, const tool_problem *p,
                            float *const *out, tool_err *e);
/* Storage dtype of the gradient of input i. */
vkla_dtype tool_grad_dtype(int i, vkla_dtype storage);
int tool_dev_download(vkla_context *ctx, const tool_dev *d, float *out, float *ht, tool_err *e);

/* Library error -> tool error: where = the op name (or "device"), what = vkla_last_error. */
int tool_lib_fail(vkla_context *ctx, vkla_result r, const char *where, tool_err *e);

/* Accuracy check against the float64 reference (SPEC "Accuracy"). */
typedef struct tool_check {
  double nmse_o, target_o;
  double nmse_ht, target_ht;
  int has_ht;                 /* ht was checked */
  int finite_o, finite_ht;    /* device outputs are all finite */
  int pass_o, pass_ht;        /* each within its target (and finite) */
  int pass;                   /* all checked outputs pass */
} tool_check;
#define TOOL_TARGET_F32 1e-9
#define TOOL_TARGET_FLOOR 1e-12
#define TOOL_TARGET_GAMMA 1e-8 /* dg_gamma: a sum whose terms cancel (tool_check_grads) */
/* out/ht: the device results as float32 (ht may be NULL). 0, or -1 when the reference fails. */
int tool_check_results(const tool_op *op, const tool_problem *p, const tool_opts *o,
                       const float *out, const float *ht, tool_check *c, tool_err *e);

/* Accuracy of the backward pass: each gradient against the float64 reference, with the target
 * of its storage dtype (f32: 1e-9; f16/bf16 dq dk dv: ten times the error of rounding the
 * reference gradient once), and 1e-8 for dg_gamma (a sum over all tokens of terms that cancel). */
typedef struct tool_grad_check {
  int has[TI_GRADS];          /* this gradient was checked */
  double nmse[TI_GRADS], target[TI_GRADS];
  int finite[TI_GRADS], pass_one[TI_GRADS];
  int pass;
} tool_grad_check;
/* grads[i]: the device gradients as float32 (NULL = not computed). 0, or -1 when the
 * reference fails. */
int tool_check_grads(const tool_op *op, const tool_problem *p, const tool_opts *o,
                     const float *const *grads, tool_grad_check *c, tool_err *e);

/* Context creation that keeps the library's message even when creation fails. */
int tool_context_create(const char *device, vkla_context **ctx, tool_err *e);

/* JSON string (quoted, escaped) to f. */
void tool_json_string(FILE *f, const char *s);

/* Device type name ("discrete", "cpu", ...). */
const char *tool_device_type_name(uint32_t type);

#ifdef __cplusplus
}
#endif

#endif /* VKLA_TOOLS_COMMON_H */
