/*
 * vkla_ref.h - float64 CPU reference of the vkla ops.
 *
 * Written directly from the definitions in SPEC.md (the recurrences for the
 * causal ops, the T x T attention form for LION), never from the chunked
 * algorithms, so that it can serve as the ground truth for every GPU form.
 *
 * All arrays are contiguous, row-major double. Sequences never mix: each
 * batch row (or each cu_seqlens segment when cu_seqlens != NULL) is an
 * independent sequence with its own state. Every function returns 0 on
 * success and -1 on bad arguments (or allocation failure); nothing is
 * printed and no global state is used.
 */
#ifndef VKLA_REF_H
#define VKLA_REF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1. Causal linear attention:
 *   S_t = exp(g_t + g_gamma + gk_t) (per key channel) * S_{t-1} + k_t v_t^T
 *   o_t = scale * S_t^T q_t
 *   normalize: z_t = (same decay) z_{t-1} + k_t,
 *              o_t = scale * S_t^T q_t / (scale * q_t . z_t + eps)        */
typedef struct vkla_ref_linear_attn_args {
  int B, T, H, K, V;           /* with cu_seqlens: B must be 1 and T is the packed total */
  const int32_t *cu_seqlens;   /* N+1 offsets or NULL (then N = B) */
  int N;                       /* number of sequences when cu_seqlens != NULL */
  const double *q, *k;         /* [B,T,H,K] */
  const double *v;             /* [B,T,H,V] */
  const double *g;             /* [B,T,H] log decay, or NULL */
  const double *g_gamma;       /* [H], or NULL */
  const double *gk;            /* [B,T,H,K], or NULL */
  const double *h0;            /* [N,H,K,V] or NULL (zeros) */
  const double *z0;            /* [N,H,K] normalizer state in, or NULL (zeros); only used with normalize */
  double scale;                /* used as given (caller resolves the default K^-1/2) */
  int normalize; double eps;
  double *o;                   /* out [B,T,H,V] */
  double *ht;                  /* out [N,H,K,V] or NULL */
  double *zt;                  /* out [N,H,K] or NULL (normalize only) */
} vkla_ref_linear_attn_args;
int vkla_ref_linear_attn(const vkla_ref_linear_attn_args *a);   /* 0 ok, -1 bad args */

/* 2. Delta rule (DeltaNet; Gated DeltaNet when g != NULL):
 *   S'_t = exp(g_t) S_{t-1};  u_t = beta_t (v_t - S'_t^T k_t);
 *   S_t  = S'_t + k_t u_t^T;  o_t = scale * S_t^T q_t                      */
typedef struct vkla_ref_delta_rule_args {
  int B, T, H, HV, K, V;       /* HV a multiple of H; value head j uses q/k head j/(HV/H) */
  const int32_t *cu_seqlens; int N;
  const double *q, *k;         /* [B,T,H,K] */
  const double *v;             /* [B,T,HV,V] */
  const double *beta;          /* [B,T,HV] */
  const double *g;             /* [B,T,HV] or NULL */
  const double *h0;            /* [N,HV,K,V] or NULL */
  double scale; int l2norm;    /* l2norm: x / sqrt(sum x^2 + 1e-6) on q and k */
  double *o;                   /* [B,T,HV,V] */
  double *ht;                  /* [N,HV,K,V] or NULL */
} vkla_ref_delta_rule_args;
int vkla_ref_delta_rule(const vkla_ref_delta_rule_args *a);

/* 3. LION bidirectional linear attention, T x T form (O(T^2) per sequence):
 *   A_ij = scale (q_i . k_j) M_ij,  o_i = sum_j A_ij v_j  [/ (sum_j A_ij + eps)]
 *   log M_ij = a_j + ... + a_{i-1} (i > j), a_{i+1} + ... + a_j (i < j), 0 (i = j)
 *   a_t = g[t] (LION-S) and/or g_gamma[h] (LION-D); both NULL: M = 1 (LION-LIT). */
typedef struct vkla_ref_lion_args {
  int B, T, H, K, V;
  const int32_t *cu_seqlens; int N;
  const double *q, *k;         /* [B,T,H,K] */
  const double *v;             /* [B,T,H,V] */
  const double *g;             /* [B,T,H] selective log decay (LION-S) or NULL */
  const double *g_gamma;       /* [H] fixed log decay (LION-D) or NULL; both NULL = LION-LIT */
  double scale; int normalize; double eps;
  double *o;                   /* [B,T,H,V] */
} vkla_ref_lion_args;
int vkla_ref_lion(const vkla_ref_lion_args *a);


/* Gradients (SPEC section 4) of L = sum(dout * o) + sum(dht * ht), in float64, derived by hand
 * from the recurrences above (a reverse pass per token), never from a chunked algorithm.
 * fwd holds the forward's inputs and options; its outputs (o, ht, zt) may be NULL and are
 * not written. Each gradient pointer may be NULL (not computed); a gradient of an absent
 * input must be NULL. Shapes are those of the matching inputs (dg_gamma [H], summed over all
 * tokens and sequences). */
typedef struct vkla_ref_linear_attn_backward_args {
  const vkla_ref_linear_attn_args *fwd;
  const double *dout;          /* [B,T,H,V] */
  const double *dht;           /* [N,H,K,V] or NULL */
  double *dq, *dk, *dv, *dg, *dg_gamma, *dgk, *dh0;
} vkla_ref_linear_attn_backward_args;
int vkla_ref_linear_attn_backward(const vkla_ref_linear_attn_backward_args *a);

typedef struct vkla_ref_delta_rule_backward_args {
  const vkla_ref_delta_rule_args *fwd;
  const double *dout;          /* [B,T,HV,V] */
  const double *dht;           /* [N,HV,K,V] or NULL */
  double *dq, *dk, *dv, *dbeta, *dg, *dh0;
} vkla_ref_delta_rule_backward_args;
int vkla_ref_delta_rule_backward(const vkla_ref_delta_rule_backward_args *a);

typedef struct vkla_ref_lion_backward_args {
  const vkla_ref_lion_args *fwd;
  const double *dout;          /* [B,T,H,V] */
  double *dq, *dk, *dv, *dg, *dg_gamma;
} vkla_ref_lion_backward_args;
int vkla_ref_lion_backward(const vkla_ref_lion_backward_args *a);

/* helpers in ref_common.c */

/* sum (ref-out)^2 / sum ref^2; if sum ref^2 == 0, returns sum (ref-out)^2 */
double vkla_ref_nmse(const double *ref, const float *out, size_t n);
/* 1 if every x[i] is finite (no inf, no nan), else 0 */
int vkla_ref_all_finite(const float *x, size_t n);

/* Internal to the reference (used by the ref_*.c files): sequence layout.
 * vkla_ref_seq_check validates B/T/cu_seqlens/N and stores the number of
 * sequences in *nseq (N with cu_seqlens, else B); 0 ok, -1 bad.
 * vkla_ref_seq_range gives sequence n's batch row and token range [t0, t1). */
int vkla_ref_seq_check(int B, int T, const int32_t *cu_seqlens, int N, int *nseq);
void vkla_ref_seq_range(int T, const int32_t *cu_seqlens, int n,
                        int *b, int *t0, int *t1);
/* dst = src / sqrt(sum src^2 + 1e-6) with l2norm, else src (n elements); returns the factor
 * (1 without l2norm). */
double vkla_ref_l2_row(double *dst, const double *src, size_t n, int l2norm);

#ifdef __cplusplus
}
#endif

#endif /* VKLA_REF_H */
