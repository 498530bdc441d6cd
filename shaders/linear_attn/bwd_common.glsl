// Causal linear attention, backward pass: the interface shared by the bwd_*.comp kernels.
// Spec constants, push constants, bindings and the scratch layout must match
// host/linear_attn_backward.c.
//
// Scratch (one f32 binding; region offsets in elements, relative to scr_base):
//   prm    tensor strides (uint bits): q k v dout dq dk dv, (b, t, h) each
//   state  [H, chunks, K, VP]  state entering each chunk (written by the forward's kernels)
//   decay  [H, chunks, KD]     total log decay of each chunk (idem)
//   fin    [N, H, K, V], finz [N, H, K]  final state and normalizer of each sequence (idem)
//   dst    [H, chunks, K, VP]  state-gradient contributions, then dL/dS leaving each chunk
//   amat   [H, chunks, C, C]   A[t][s] = sum_i q_t[i] k_s[i] e^(G_t[i] - G_s[i]), s <= t
//   pmat   [H, chunks, C, C]   P[t][s] = do'_t . v_s, s <= t (undecayed)
//   nrm    [H, chunks, C, 2]   normalize: 1 / d_t and do'_t[V] = -(do_t . o_t) / d_t
//   dgp    [H, chunks, NKT, C] per key tile: sum over its channels of dL/dG_t
#ifndef VKLA_LINEAR_ATTN_BWD_COMMON_GLSL
#define VKLA_LINEAR_ATTN_BWD_COMMON_GLSL

#include "../common/dtype.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 64;
layout(constant_id = 2) const uint V = 64;
layout(constant_id = 3) const uint H = 1;
layout(constant_id = 4) const uint FLAGS = 0;   // the forward's option flags
layout(constant_id = 5) const uint P0 = 16;     // chunk size
layout(constant_id = 6) const uint BFLAGS = 0;  // gradients requested
layout(constant_id = 7) const uint P2 = 1;

const bool HAS_G = (FLAGS & 1u) != 0u;
const bool HAS_GAMMA = (FLAGS & 2u) != 0u;
const bool HAS_GK = (FLAGS & 4u) != 0u;
const bool NORMALIZE = (FLAGS & 8u) != 0u;
const bool VARLEN = (FLAGS & 64u) != 0u;
const bool GATED = HAS_G || HAS_GAMMA || HAS_GK;

const bool WANT_DQ = (BFLAGS & 1u) != 0u;
const bool WANT_DK = (BFLAGS & 2u) != 0u;
const bool WANT_DV = (BFLAGS & 4u) != 0u;
const bool WANT_DG = (BFLAGS & 8u) != 0u;
const bool WANT_DGAMMA = (BFLAGS & 16u) != 0u;
const bool WANT_DGK = (BFLAGS & 32u) != 0u;
const bool WANT_DH0 = (BFLAGS & 64u) != 0u;
const bool HAS_DHT = (BFLAGS & 128u) != 0u;
const bool WANT_GATES = WANT_DG || WANT_DGAMMA || WANT_DGK;

const uint C = P0;
const uint VP = V + (NORMALIZE ? 1u : 0u);
const uint KD = HAS_GK ? K : 1u;
const uint KT = 16u;                      // key channels per dq/dk workgroup (and dgp tile)
const uint NKT = (K + KT - 1u) / KT;

layout(push_constant) uniform Params {
    uint T;
    uint h_begin, s_begin, c_begin;
    uint q_base, k_base, v_base, do_base;
    uint g_base, gamma_base, gk_base, dht_base;
    uint scr_base;
    uint dq_base, dk_base, dv_base, outa_base, outb_base;
    float scale;
    float eps;
    uint nchunks;
    uint r_state, r_decay, r_fin, r_finz, r_dst, r_amat, r_pmat, r_nrm, r_dgp;
    uint nseqs;
} pc;

layout(std430, binding = 0) readonly buffer QB { ELEM q_buf[]; };
layout(std430, binding = 1) readonly buffer KB { ELEM k_buf[]; };
layout(std430, binding = 2) readonly buffer VB { ELEM v_buf[]; };
layout(std430, binding = 3) readonly buffer DOB { ELEM do_buf[]; };
layout(std430, binding = 4) readonly buffer GB { float g_buf[]; };
layout(std430, binding = 5) readonly buffer GGB { float gamma_buf[]; };
layout(std430, binding = 6) readonly buffer GKB { float gk_buf[]; };
layout(std430, binding = 7) readonly buffer DHTB { float dht_buf[]; };
layout(std430, binding = 8) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 9) readonly buffer CHB { uvec2 chunktab[]; };
layout(std430, binding = 10) buffer SCRB { float scr[]; };
layout(std430, binding = 11) writeonly buffer DQB { ELEM dq_buf[]; };
layout(std430, binding = 12) writeonly buffer DKB { ELEM dk_buf[]; };
layout(std430, binding = 13) writeonly buffer DVB { ELEM dv_buf[]; };
layout(std430, binding = 14) writeonly buffer OAB { float outa[]; };  // dh0 / dgk / dg
layout(std430, binding = 15) writeonly buffer OBB { float outb[]; };  // dg_gamma

#include "../common/seqs.glsl"
#include "decay.glsl"

// tensor strides from the prm region: 0 q, 1 k, 2 v, 3 dout, 4 dq, 5 dk, 6 dv
uint strides[21];
void load_strides()
{
    for (uint i = 0; i < 21u; i++)
        strides[i] = floatBitsToUint(scr[pc.scr_base + i]);
}
uint tix(uint which, uint b, uint t, uint h)
{
    return b * strides[3u * which] + t * strides[3u * which + 1u] + h * strides[3u * which + 2u];
}

float load_q(uint b, uint t, uint h, uint i) { return LOADE(q_buf[pc.q_base + tix(0u, b, t, h) + i]); }
float load_k(uint b, uint t, uint h, uint i) { return LOADE(k_buf[pc.k_base + tix(1u, b, t, h) + i]); }
// value column j; the virtual column V is all ones (it carries the normalizer z)
float load_v(uint b, uint t, uint h, uint j)
{
    if (NORMALIZE && j == V)
        return 1.0;
    return LOADE(v_buf[pc.v_base + tix(2u, b, t, h) + j]);
}
float load_do(uint b, uint t, uint h, uint j) { return LOADE(do_buf[pc.do_base + tix(3u, b, t, h) + j]); }
// the upstream gradient of the un-normalized output (VP columns) of local token tl of chunk c:
// do_t / d_t and, in column V, -(do_t . o_t) / d_t with normalize; do_t without
float load_dop(uint b, uint t, uint h, uint j, uint c, uint tl)
{
    if (!NORMALIZE)
        return load_do(b, t, h, j);
    const uint n = pc.scr_base + pc.r_nrm + ((h * pc.nchunks + c) * C + tl) * 2u;
    return j < V ? load_do(b, t, h, j) * scr[n] : scr[n + 1u];
}
void store_dq(uint b, uint t, uint h, uint i, float x) { dq_buf[pc.dq_base + tix(4u, b, t, h) + i] = STOREE(x); }
void store_dk(uint b, uint t, uint h, uint i, float x) { dk_buf[pc.dk_base + tix(5u, b, t, h) + i] = STOREE(x); }
void store_dv(uint b, uint t, uint h, uint j, float x) { dv_buf[pc.dv_base + tix(6u, b, t, h) + j] = STOREE(x); }

// element offsets (absolute in scr) of a chunk's rows in the per-chunk regions
uint chunk_row(uint region, uint h, uint c, uint width) { return pc.scr_base + region + (h * pc.nchunks + c) * width; }

// In-chunk inclusive cumulative scalar log decay s_gs[t] (0 past the chunk's end). Call with
// every thread of the workgroup; ends with a barrier.
shared float s_gs[C];
void chunk_scalar_decay(uint lid, uint nt, uint b, uint tb, uint h, uint L)
{
    for (uint t = lid; t < C; t += nt)
        s_gs[t] = t < L ? log_decay_scalar(b, tb + t, h) : 0.0;
    barrier();
    if (lid == 0u)
        for (uint t = 1u; t < L; t++)
            s_gs[t] += s_gs[t - 1u];
    barrier();
}

// Per-channel cumulative log decay of the key tile x0..x0+KT-1: s_gc[x * C + t] = G_t[x0 + x]
// (the scalar part included; held at G_(L-1) past the chunk's end). Needs s_gs; call with
// every thread of the workgroup; ends with a barrier.
shared float s_gc[KT * C];
void chunk_channel_decay(uint lid, uint b, uint tb, uint h, uint L, uint x0)
{
    barrier();
    if (lid < KT) {
        float run = 0.0;
        for (uint t = 0; t < C; t++) {
            if (t < L && x0 + lid < K)
                run += log_decay_channel(b, tb + t, h, x0 + lid);
            s_gc[lid * C + t] = s_gs[min(t, L - 1u)] + run;
        }
    }
    barrier();
}

// The chunk's own coordinates: sequence s, batch row b, first token tb, tokens L.
void chunk_coords(uint c, out uint s, out uint b, out uint tb, out uint L, out uint local0,
                  out uint len)
{
    uint t0;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    L = min(C, len - local0);
    tb = t0 + local0;
}

#endif
