/* Delta rule: what the forward (host/delta_rule.c) shares with its backward pass
 * (host/delta_rule_backward.c): the argument checks, the scratch layout of the chunk form and
 * the launches of its first two kernels, which the backward reuses to recompute the WY factors
 * and the states entering each chunk. Not installed. */
#ifndef VKLA_DELTA_RULE_H_
#define VKLA_DELTA_RULE_H_

#include "internal.h"

#define MAX_DIM 256u
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))
#define SHARED_FLOATS 8192u /* 32 KiB: the smallest maxComputeSharedMemorySize we plan for */

/* option flags: a push-constant word (shaders/delta_rule/common.glsl), not spec constants */
enum { F_G = 1, F_L2NORM = 2, F_H0 = 4, F_HT = 8, F_VARLEN = 16,
       F_Q4 = 32, F_K4 = 64, F_V4 = 128, F_O4 = 256, /* vec4 access to q, k, v, o */
       F_STORE_T = 512 /* chunk_prep also stores T = (I + A)^-1 */ };

/* binding slots, in shader order */
enum { B_Q, B_K, B_V, B_O, B_BETA, B_G, B_H0, B_HT, B_SEQ, B_CHUNK, B_WORK, B_STATE, B_TMAT,
       B_COUNT };
/* push constant words */
enum { W_T = 0, W_SPLIT = 1, W_FLAGS = 4, W_GROUP = 5, W_HV = 6, W_SCALE = 7, W_NCHUNKS = 8,
       W_BASES = 9, W_STRIDES = 19, W_TMAT = 31, W_COUNT = 32 };

typedef struct vkla_dr_plan {
    vkla_form form;
    bool backward;     /* the plan of a backward pass */
    uint32_t B, T, H, HV, K, V, N, C;
    uint32_t flags;
    vkla_dtype dtype;
    float scale;
    vkla_seqs seqs;
    uint64_t off_seq, off_chunk, off_work, off_state, off_tmat, scratch_bytes;
    uint32_t K4, V4;   /* K and V in whole vec4s */
    uint64_t work_rec; /* vec4s per (value head, chunk) work record: C (2 K4 + V4 + 1) */
} vkla_dr_plan;

/* Checks the forward's args and lays out its scratch. backward: the args are those of a
 * backward pass (o and ht are not checked or used, the form is only checked: the plan is the
 * chunk form's, and the scratch also holds T per chunk). On success the caller frees
 * p->seqs (vkla__seqs_free). */
vkla_result vkla__dr_plan(vkla_context *ctx, const vkla_delta_rule_args *a, bool backward,
                          vkla_dr_plan *p);
/* The bindings (B_COUNT of them) and push constants of the kernels of a plan; scr + soff is
 * the start of its scratch. */
void vkla__dr_binds(const vkla_dr_plan *p, const vkla_delta_rule_args *a, vkla_buffer *scr,
                    uint64_t soff, vkla_bind *binds);
void vkla__dr_push(const vkla_dr_plan *p, const vkla_delta_rule_args *a, vkla_launch *l);
/* Orders the call after earlier vkla work and writes the varlen tables into scratch. */
vkla_result vkla__dr_begin(vkla_context *ctx, VkCommandBuffer cmd, const vkla_dr_plan *p,
                           vkla_buffer *scr, uint64_t soff);
/* Chunk form steps 1 and 2: the WY transform of every chunk (W, KD, U and, with F_STORE_T in
 * l->push[W_FLAGS], T), then the state pass (the state entering each chunk, V', and ht when
 * F_HT is set). l holds the binds and push constants. */
vkla_result vkla__dr_prep_scan(vkla_context *ctx, VkCommandBuffer cmd, const vkla_dr_plan *p,
                               const vkla_split *splits, uint32_t nsplit, vkla_launch *l);
/* "f32", "f16" or "bf16": the suffix of the kernel variants */
const char *vkla__dr_dtype_suffix(vkla_dtype d);
/* Calls split along T: the state pass alone (o not written), and the carried state's shape. */
extern const vkla_op_impl vkla__dr_states_impl;
void vkla__dr_state_shape(const void *args, uint32_t i, uint32_t *ndim, uint64_t *shape);

/* The sizes the per-launch models use (docs/bench.md, "Per-kernel breakdown"): value heads,
 * K, V, tokens, the chunk sums, and bytes: qk (q and k, read once), vo (v or o, or dout),
 * gates (beta and g), the per-chunk states and a (W, U, KD) work record per token, all f32. */
typedef struct vkla_dr_sizes {
    double HV, K, V, tok, qk, vo, gates, states, work;
    vkla_chunk_sums cs;
} vkla_dr_sizes;
vkla_dr_sizes vkla__dr_sizes(const vkla_dr_plan *p);

#endif
