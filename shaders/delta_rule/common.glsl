// Delta rule (DeltaNet / Gated DeltaNet): the interface shared by the recurrent and chunk
// kernels. Spec constants, push constants and bindings must match host/delta_rule.c.
//
// Only the sizes are spec constants (K, V and each kernel's tiles): the options (gate, l2norm,
// states, varlen) and the head counts are push-constant words, so one compiled pipeline serves
// every option combination of a shape (compiling is the slow part on some drivers).
#ifndef VKLA_DELTA_RULE_COMMON_GLSL
#define VKLA_DELTA_RULE_COMMON_GLSL

#extension GL_EXT_control_flow_attributes : require
#include "../common/dtype.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 64;
layout(constant_id = 2) const uint V = 64;
layout(constant_id = 3) const uint P0 = 64;  // kernel-specific sizes (see each kernel)
layout(constant_id = 4) const uint P1 = 16;
layout(constant_id = 5) const uint P2 = 16;
layout(constant_id = 6) const uint P3 = 16;

layout(push_constant) uniform Params {
    uint T;                         // tokens per batch row of the tensors
    uint h_begin, s_begin, c_begin; // this dispatch's first value head, sequence, chunk
    uint flags;                     // F_* below
    uint group;                     // HV / H: value head h reads q/k head h / group
    uint HV;                        // value heads
    float scale;
    uint nchunks;                   // chunks of the whole call (scratch layout)
    uint q_base, k_base, v_base, o_base, beta_base, g_base, h0_base, ht_base, wk_base, st_base;
    uint q_sb, q_st, q_sh;
    uint k_sb, k_st, k_sh;
    uint v_sb, v_st, v_sh;
    uint o_sb, o_st, o_sh;          // (backward kernels: dout's strides)
    uint tm_base;                   // the T = (I + A)^-1 matrices (chunk_prep with STORE_T)
} pc;

#define HAS_G ((pc.flags & 1u) != 0u)
#define L2NORM ((pc.flags & 2u) != 0u)
#define HAS_H0 ((pc.flags & 4u) != 0u)
#define HAS_HT ((pc.flags & 8u) != 0u)
#define VARLEN ((pc.flags & 16u) != 0u)
// q, k, v, o may be read / written as whole vec4s (host checked: last dimension a multiple of 4,
// strides and offsets aligned)
#define Q4 ((pc.flags & 32u) != 0u)
#define K4OK ((pc.flags & 64u) != 0u)
#define V4OK ((pc.flags & 128u) != 0u)
#define O4 ((pc.flags & 256u) != 0u)
#define STORE_T ((pc.flags & 512u) != 0u) // chunk_prep also writes T to tmat_buf


layout(std430, binding = 0) readonly buffer QB { ELEM q_buf[]; };
layout(std430, binding = 1) readonly buffer KB { ELEM k_buf[]; };
layout(std430, binding = 2) readonly buffer VB { ELEM v_buf[]; };
layout(std430, binding = 0) readonly buffer QB4 { ELEM4 q4_buf[]; };  // vec4 views of the same
layout(std430, binding = 1) readonly buffer KB4 { ELEM4 k4_buf[]; };
layout(std430, binding = 2) readonly buffer VB4 { ELEM4 v4_buf[]; };
#ifdef DR_BACKWARD
// The backward kernels (bwd_*.comp) bind the same slots with these meanings: 3 dout (read),
// 4 the per (value head, chunk) backward record (bwd_layout.glsl), 5 the state gradient carried
// between the passes of bwd_scan ([N, HV, K, V]), 6 dht (read), 7 dh0 (write). Their flags
// word also carries the step (or pass) of a multi-dispatch kernel in its high 16 bits.
layout(std430, binding = 3) readonly buffer OB { ELEM o_buf[]; };
layout(std430, binding = 3) readonly buffer OB4 { ELEM4 o4_buf[]; };
layout(std430, binding = 4) coherent buffer BWB { float bwd_buf[]; };
layout(std430, binding = 4) coherent buffer BWB4 { vec4 bwd4_buf[]; }; // the same, as vec4s
layout(std430, binding = 5) buffer CYB { float carry_buf[]; };
#define BWD_STEP (pc.flags >> 16)
#else
layout(std430, binding = 3) writeonly buffer OB { ELEM o_buf[]; };
layout(std430, binding = 3) writeonly buffer OB4 { ELEM4 o4_buf[]; };
layout(std430, binding = 4) readonly buffer BB { float beta_buf[]; };
layout(std430, binding = 5) readonly buffer GB { float g_buf[]; };
#endif
layout(std430, binding = 6) readonly buffer H0B { float h0_buf[]; };
layout(std430, binding = 7) writeonly buffer HTB { float ht_buf[]; };
layout(std430, binding = 8) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 9) readonly buffer CHB { uvec2 chunktab[]; };
// Per (value head, chunk) work record of the chunk form, in vec4 units (rows padded to whole
// vec4s, K4 = ceil(K/4), V4 = ceil(V/4)):
//   W [C][K4]   = T diag(b e^G / |k|) K
//   KD [C][K4]  = K * e^(G_last - G) / |k|  (the keys as they enter the chunk's state update)
//   U [C][V4]   = T diag(b) V, replaced by V' = U - W S by the scan
//   info [C]    = (G cumulative log gate, 1/|k|, 1/|q|, beta) per token
layout(std430, binding = 10) buffer WKB { vec4 work_buf[]; };
// The state entering each chunk: [HV, chunks, K, V4] (vec4 units).
layout(std430, binding = 11) buffer STB { vec4 state_buf[]; };
// float views of the work records and states (the straight-line kernels address single columns)
layout(std430, binding = 10) buffer WKBF { float work_f[]; };
layout(std430, binding = 11) buffer STBF { float state_f[]; };
// T = (I + A)^-1 per (value head, chunk): [HV, chunks, C, C/4] (vec4 units), row-major.
layout(std430, binding = 12) buffer TMB { vec4 tmat_buf[]; };

const uint K4 = (K + 3u) / 4u;
const uint V4 = (V + 3u) / 4u;

#include "../common/seqs.glsl"

const float L2_EPS = 1e-6;

// Subgroup variant (SUBGROUP=1) of chunk_scan. On CPU drivers every storage access is a loop
// over the lanes of a subgroup (with a bounds check per element), whatever the addresses, while
// moving a value between lanes is a register operation. Where all lanes of a subgroup need the
// same values, each lane loads a different one and the others take it by broadcast.
#if defined(SUBGROUP) && SUBGROUP
#extension GL_KHR_shader_subgroup_ballot : require
// Lane `lane`'s x (lane a constant once the loops are unrolled, so the switch folds away).
vec4 dr_bcast(vec4 x, uint lane)
{
    switch (lane) {
    case 0u: return subgroupBroadcast(x, 0u);
    case 1u: return subgroupBroadcast(x, 1u);
    case 2u: return subgroupBroadcast(x, 2u);
    case 3u: return subgroupBroadcast(x, 3u);
    case 4u: return subgroupBroadcast(x, 4u);
    case 5u: return subgroupBroadcast(x, 5u);
    case 6u: return subgroupBroadcast(x, 6u);
    case 7u: return subgroupBroadcast(x, 7u);
    case 8u: return subgroupBroadcast(x, 8u);
    case 9u: return subgroupBroadcast(x, 9u);
    case 10u: return subgroupBroadcast(x, 10u);
    case 11u: return subgroupBroadcast(x, 11u);
    case 12u: return subgroupBroadcast(x, 12u);
    case 13u: return subgroupBroadcast(x, 13u);
    case 14u: return subgroupBroadcast(x, 14u);
    default: return subgroupBroadcast(x, 15u);
    }
}
#endif

// q/k: head hq is the q/k head (value head / group)
float load_q(uint b, uint t, uint hq, uint i) { return LOADE(q_buf[pc.q_base + b * pc.q_sb + t * pc.q_st + hq * pc.q_sh + i]); }
float load_k(uint b, uint t, uint hq, uint i) { return LOADE(k_buf[pc.k_base + b * pc.k_sb + t * pc.k_st + hq * pc.k_sh + i]); }
float load_v(uint b, uint t, uint h, uint j) { return LOADE(v_buf[pc.v_base + b * pc.v_sb + t * pc.v_st + h * pc.v_sh + j]); }
#ifndef DR_BACKWARD
void store_o(uint b, uint t, uint h, uint j, float x) { o_buf[pc.o_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh + j] = STOREE(x); }
#endif
// four consecutive elements from column i (a multiple of 4); zeros past the end of the row
// (n elements). ok: the tensor may be read as whole vec4s.
#define DR_LOAD4(name, buf, buf4, ok, base, sb, st, sh, n)                      \
    vec4 name(uint b, uint t, uint h, uint i)                                    \
    {                                                                            \
        const uint e = pc.base + b * pc.sb + t * pc.st + h * pc.sh + i;          \
        if (ok)                                                                  \
            return LOADE4(buf4[e / 4u]);                                         \
        vec4 x = vec4(0.0);                                                      \
        for (uint m = 0; m < 4u; m++)                                            \
            if (i + m < n)                                                       \
                x[m] = LOADE(buf[e + m]);                                        \
        return x;                                                                \
    }
DR_LOAD4(load_q4, q_buf, q4_buf, Q4, q_base, q_sb, q_st, q_sh, K)
DR_LOAD4(load_k4, k_buf, k4_buf, K4OK, k_base, k_sb, k_st, k_sh, K)
DR_LOAD4(load_v4, v_buf, v4_buf, V4OK, v_base, v_sb, v_st, v_sh, V)
#ifdef DR_BACKWARD
float load_o(uint b, uint t, uint h, uint j) { return LOADE(o_buf[pc.o_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh + j]); }
DR_LOAD4(load_o4, o_buf, o4_buf, O4, o_base, o_sb, o_st, o_sh, V) // dout
#else
void store_o4(uint b, uint t, uint h, uint j, vec4 x)
{
    const uint e = pc.o_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh + j;
    if (O4) {
        o4_buf[e / 4u] = STOREE4(x);
        return;
    }
    for (uint m = 0; m < 4u; m++)
        if (j + m < V)
            o_buf[e + m] = STOREE(x[m]);
}
float load_beta(uint b, uint t, uint h) { return beta_buf[pc.beta_base + (b * pc.T + t) * pc.HV + h]; }
float load_g(uint b, uint t, uint h) { return HAS_G ? g_buf[pc.g_base + (b * pc.T + t) * pc.HV + h] : 0.0; }
#endif

// The work record of value head h, chunk c (P0 = C in the chunk kernels), and its parts.
uint work_rec(uint h, uint c) { return pc.wk_base + (h * pc.nchunks + c) * (P0 * (2u * K4 + V4 + 1u)); }
uint work_w(uint rec) { return rec; }
uint work_kd(uint rec) { return rec + P0 * K4; }
uint work_u(uint rec) { return rec + 2u * P0 * K4; }
uint work_info(uint rec) { return rec + P0 * (2u * K4 + V4); }
uint state_at(uint h, uint c) { return pc.st_base + (h * pc.nchunks + c) * (K * V4); }
uint tmat_at(uint h, uint c) { return pc.tm_base + (h * pc.nchunks + c) * (P0 * (P0 / 4u)); }

#endif
