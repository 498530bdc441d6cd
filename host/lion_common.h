/* LION: what host/lion.c (forward) and host/lion_backward.c share: the kernels' interface
 * (flags, binding slots, push constant words, as in shaders/lion/common.glsl), the argument
 * checks of vkla_lion_args, and small helpers. Private to the two files. */
#ifndef VKLA_LION_COMMON_H_
#define VKLA_LION_COMMON_H_

#include "internal.h"

/* runtime flags (push constant word W_CFG, with the chunk size in bits 8-15) */
enum { F_G = 1, F_GAMMA = 2, F_NORM = 4, F_VARLEN = 8, F_TRANS = 16, F_ONES = 32,
       F_STATE_T = 64, F_TERMS = 128 };

/* binding slots, in shader order */
enum { B_Q, B_K, B_V, B_O, B_G, B_GAMMA, B_SEQ, B_CHUNK, B_ST, B_Z, B_COUNT };
/* chunk_output's one more binding: the decay-gradient terms of the backward pass (F_TERMS) */
#define B_TERMS B_COUNT
/* push constant words */
enum { W_T = 0, W_SPLIT = 1, W_STRIDES = 8, W_SCALE = 24, W_EPS = 25, W_NTILES = 26, W_K = 27,
       W_V = 28, W_H = 29, W_CFG = 30, W_XS = 31, W_COUNT = 32 };

#define LION_MAX_DIM 256u
#define LION_TILE 64u /* tile width over K and V, and the token tile of every dispatch */

/* The validated shape and options of a vkla_lion_args. */
typedef struct vkla_lion_dims {
    vkla_form form;
    uint32_t B, T, H, K, V, N;
    uint32_t C;            /* chunk size of the chunk form (16, 32, 64) */
    uint32_t flags;        /* F_G, F_GAMMA, F_NORM, F_VARLEN */
    vkla_dtype dtype;
    float scale, eps;
    vkla_seqs seqs;        /* sequences in 64-token tiles (free with vkla__seqs_free) */
} vkla_lion_dims;

/* Checks the forward's inputs and options (and o when need_o); messages start with op. */
vkla_result vkla__lion_check(vkla_context *ctx, const char *op, const vkla_lion_args *a,
                             bool need_o, vkla_lion_dims *d);
/* Rows of a [B,T,H,X] tensor can be read as 4-element vectors. */
bool vkla__lion_vec4_rows(const vkla_tensor *t);
/* Register block of a lane (8 or 16, see host/lion.c). */
uint32_t vkla__lion_lane_block(vkla_context *ctx);
/* Pipeline "lion/<kernel>" (fp32) or, with dtype >= 0, "lion/<kernel>.<dtype>". */
vkla_result vkla__lion_pipeline(vkla_context *ctx, const char *kernel, int dtype, uint32_t lanes,
                                uint32_t rb, uint32_t vec, uint32_t nbind, vkla_pipeline **out);
/* The push constants common to every dispatch of a call (xs: word W_XS). */
void vkla__lion_push(const vkla_lion_dims *d, uint32_t xs, vkla_launch *l);
/* The start of a call's scratch layout: the varlen tables (their offsets), then the region
 * alignment al; returns the first free offset. */
uint64_t vkla__lion_layout_tables(vkla_context *ctx, const vkla_lion_dims *d, uint64_t *al,
                                  uint64_t *off_seq, uint64_t *off_chunk);
/* Records the barrier that orders this call's scratch use after earlier vkla work on the same
 * scratch, then (varlen) the upload of the sequence and tile tables into it. */
vkla_result vkla__lion_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_dims *d,
                              vkla_buffer *scr, uint64_t off_seq, uint64_t off_chunk);
/* A packed [B,T,H,xp] f32 region of the scratch; its element strides go to st[0..2]. */
vkla_bind vkla__lion_packed_bind(const vkla_lion_dims *d, vkla_buffer *scr, uint64_t off,
                                 uint32_t xp, uint64_t *st);
/* Row strides of tensor slot i (0..3 = q, k, v, o) in the push constants. */
void vkla__lion_set_strides(vkla_launch *l, int i, const uint64_t *st);

/* One call of the forward (host/lion.c): its scratch (every check of the op; *short_path, when
 * not NULL: whether it takes host/lion_short.c), and its recording. bnd (chunk form): the call
 * is one piece of a longer one; its state scans start from and end in two consecutive boundary
 * slots at bnd->offset (shaders/lion/chunk_state.comp), and with states_only the call stops
 * after them (o is not written). */
typedef struct vkla_lion_bnd {
    vkla_buffer *buf;
    uint64_t offset;      /* bytes; slot p of a chain of pieces: piece p's two slots */
    uint32_t nsh;         /* sequences x heads of the call (< 32768) */
    bool states_only;
} vkla_lion_bnd;
#define LION_F_BND 65536u /* chunk_state's flag (bits 17-31 of the flags word: nsh) */
vkla_result vkla__lion_scratch_one(vkla_context *ctx, const vkla_lion_args *a, uint64_t *bytes,
                                   bool *short_path);
vkla_result vkla__lion_record_one(vkla_context *ctx, VkCommandBuffer cmd, const vkla_lion_args *a,
                                  bool run_mode, const vkla_lion_bnd *bnd);
/* Bytes of one boundary slot (shaders/lion/chunk_state.comp, F_BND): nsh (sequence, head)
 * pairs x 2 directions of a rows x cols state, both rounded up to 4, and its z column. */
static inline uint64_t vkla__lion_slot_bytes(uint64_t nsh, uint64_t rows, uint64_t cols)
{
    return 4 * nsh * 2 * ((rows + 3) & ~3ull) * (((cols + 3) & ~3ull) + 1);
}
/* One call of the backward pass (host/lion_backward.c) and its scratch; pc (may be NULL): the
 * call is one piece of a longer one (one sequence), run in the stages of host/lion_tsplit.c:
 * both products' state scans take and give the states at the piece's ends through boundary
 * slots (as the forward's), and the decay gradient carries its suffix sum and dg_gamma's
 * running sum across pieces (shaders/lion/bwd_dg.comp, bit 19). */
enum { LION_BWD_SCAN_Q = 1, /* dq's product's scan alone */
       LION_BWD_SCANS = 2,  /* both scans (with normalize, the forward output and do' between) */
       LION_BWD_ALL = 3 };
typedef struct vkla_lion_bwd_piece {
    vkla_buffer *buf;
    uint64_t slots_q, slots_k; /* bytes: this piece's two boundary slots of each scan */
    uint64_t carry;            /* bytes: [2, H] f32 (dg_gamma's running sum, dg's carry) */
    uint32_t nsh;              /* heads (one sequence per piece) */
    int stage;
    bool final;                /* the last piece recorded: dg_gamma from the running sum */
} vkla_lion_bwd_piece;
vkla_result vkla__lion_backward_scratch_one(vkla_context *ctx, const vkla_lion_backward_args *a,
                                            uint64_t *bytes, bool *short_path);
vkla_result vkla__lion_backward_record_one(vkla_context *ctx, VkCommandBuffer cmd,
                                           const vkla_lion_backward_args *a, bool run_mode,
                                           const vkla_lion_bwd_piece *pc);
vkla_result vkla__lion_backward_tsplit_scratch(vkla_context *ctx,
                                               const vkla_lion_backward_args *a, uint64_t *bytes);
vkla_result vkla__lion_backward_tsplit_record(vkla_context *ctx, VkCommandBuffer cmd,
                                              const vkla_lion_backward_args *a, bool run_mode);

/* The forward's scratch and record (host/lion_tsplit.c): one call, or pieces of T when the
 * call's scratch would pass the context's scratch limit, one (sequence, head) slab exceeds
 * maxStorageBufferRange, or the sequences are longer than LION_MAX_PIECE tokens. */
#define LION_MAX_PIECE 32768u
vkla_result vkla__lion_tsplit_scratch(vkla_context *ctx, const vkla_lion_args *a, uint64_t *bytes);
vkla_result vkla__lion_tsplit_record(vkla_context *ctx, VkCommandBuffer cmd,
                                     const vkla_lion_args *a, bool run_mode);

/* The short-sequence path (host/lion_short.c): LION-LIT with K, V <= LION_SHORT_MAX_DIM. */
#define LION_SHORT_MAX_DIM 16u
/* Whether a call with these dims takes it (the shape, or VKLA_LION_SHORT=0|1). */
bool vkla__lion_short_use(vkla_context *ctx, const vkla_lion_dims *d);
/* Its scratch: the varlen tables only. */
uint64_t vkla__lion_short_scratch(vkla_context *ctx, const vkla_lion_dims *d);
/* Records it; t: q, k, v, dout, then o (forward, dout NULL) or dq, dk, dv (backward: each
 * NULL or buffer-less when not wanted). */
vkla_result vkla__lion_short_record(vkla_context *ctx, VkCommandBuffer cmd, const char *op,
                                    const vkla_lion_dims *d, const vkla_tensor *const *t,
                                    vkla_buffer *scratch, uint64_t scratch_offset, bool run_mode);

#endif
