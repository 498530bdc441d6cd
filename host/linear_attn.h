/* Causal linear attention: what the forward (host/linear_attn.c) shares with the backward
 * (host/linear_attn_backward.c): option flags, the forward's binding slots and push words, the
 * validated plan of a call, and the chunk-form steps that compute the per-chunk states. */
#ifndef VKLA_LINEAR_ATTN_H_
#define VKLA_LINEAR_ATTN_H_

#include "internal.h"

enum {
    F_G = 1, F_GAMMA = 2, F_GK = 4, F_NORM = 8, F_H0 = 16, F_HT = 32, F_VARLEN = 64,
    F_Z0 = 128, F_ZT = 256,
    F_K4 = 512 /* k may be read as vec4s: set in chunk_output's spec only */
};

/* binding slots, in shader order */
enum { B_Q, B_K, B_V, B_O, B_G, B_GAMMA, B_GK, B_H0, B_HT, B_Z0, B_ZT, B_SEQ, B_CHUNK,
       B_STATE, B_DECAY, B_COUNT };
/* push constant words */
enum { W_T = 0, W_SPLIT = 1, W_STRIDES = 8, W_SCALE = 29, W_EPS = 30, W_NCHUNKS = 31,
       W_COUNT = 32 };

#define MAX_DIM 256u
#define FLOAT_DTYPES ((1u << VKLA_DTYPE_F32) | (1u << VKLA_DTYPE_F16) | (1u << VKLA_DTYPE_BF16))
#define F32_ONLY (1u << VKLA_DTYPE_F32)

typedef struct vkla_la_plan {
    vkla_form form;
    uint32_t B, T, H, K, V, N, C, VP, KD;
    uint32_t flags;
    vkla_dtype dtype;
    float scale, eps;
    vkla_seqs seqs;
    uint64_t off_seq, off_chunk, off_state, off_decay, scratch_bytes;
} vkla_la_plan;

/* Validates the args (every check of the forward) and lays out the forward's scratch. On
 * success the caller frees p->seqs (vkla__seqs_free). */
vkla_result vkla__la_make_plan(vkla_context *ctx, const vkla_linear_attn_args *a, vkla_la_plan *p);
void vkla__la_fill_push(const vkla_la_plan *p, const vkla_linear_attn_args *a, vkla_launch *l);
const char *vkla__la_dtype_suffix(vkla_dtype d);
/* The forward's bindings (B_COUNT of them) for a call whose scratch starts at scr + soff. */
void vkla__la_binds(const vkla_la_plan *p, const vkla_linear_attn_args *a, vkla_buffer *scr,
                    uint64_t soff, vkla_bind *binds);
/* With cu_seqlens: writes the sequence and chunk tables into scratch (then a barrier). */
vkla_result vkla__la_upload_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_la_plan *p,
                                   vkla_buffer *scr, uint64_t soff);
/* Chunk form steps 1 and 2: each chunk's state contribution and total decay, then the state
 * pass (the state entering each chunk; ht and zt when the plan has them). */
vkla_result vkla__la_record_states(vkla_context *ctx, VkCommandBuffer cmd, const vkla_la_plan *p,
                                   const vkla_linear_attn_args *a, const vkla_bind *binds,
                                   const vkla_split *splits, uint32_t nsplit);
/* Calls split along T: the state pass alone (o not written), and the carried states' shapes. */
extern const vkla_op_impl vkla__la_states_impl;
void vkla__la_state_shape(const void *args, uint32_t i, uint32_t *ndim, uint64_t *shape);

/* The sizes the per-launch models use (docs/bench.md, "Per-kernel breakdown"): heads, K, V'
 * (V plus the normalizer column), tokens, the storage element size, the chunk sums, the bytes
 * of the gates and of one full set of per-chunk states (f32). */
typedef struct vkla_la_sizes {
    double H, K, V, VP, tok, es, gates, states;
    vkla_chunk_sums cs;
} vkla_la_sizes;
vkla_la_sizes vkla__la_sizes(const vkla_la_plan *p);

#endif
