// Causal linear attention: the interface shared by the recurrent and chunk kernels.
// Spec constants, push constants and bindings must match host/linear_attn.c.
#ifndef VKLA_LINEAR_ATTN_COMMON_GLSL
#define VKLA_LINEAR_ATTN_COMMON_GLSL

#include "../common/dtype.glsl"

#include "spec.glsl"

layout(push_constant) uniform Params {
    uint T;                         // tokens per batch row of the tensors
    uint h_begin, s_begin, c_begin; // this dispatch's first head, sequence, chunk
    uint q_base, k_base, v_base, o_base;
    uint q_sb, q_st, q_sh;
    uint k_sb, k_st, k_sh;
    uint v_sb, v_st, v_sh;
    uint o_sb, o_st, o_sh;
    uint g_base, gamma_base, gk_base;
    uint h0_base, ht_base, z0_base, zt_base;
    uint st_base, dc_base;
    float scale;
    float eps;
    uint nchunks;                   // chunks of the whole call (scratch layout)
} pc;

layout(std430, binding = 0) readonly buffer QB { ELEM q_buf[]; };
layout(std430, binding = 1) readonly buffer KB { ELEM k_buf[]; };
layout(std430, binding = 1) readonly buffer KB4 { ELEM4 k4_buf[]; };   // the same, as vec4s
layout(std430, binding = 2) readonly buffer VB { ELEM v_buf[]; };
layout(std430, binding = 3) writeonly buffer OB { ELEM o_buf[]; };
layout(std430, binding = 4) readonly buffer GB { float g_buf[]; };
layout(std430, binding = 5) readonly buffer GGB { float gamma_buf[]; };
layout(std430, binding = 6) readonly buffer GKB { float gk_buf[]; };
layout(std430, binding = 7) readonly buffer H0B { float h0_buf[]; };
layout(std430, binding = 8) writeonly buffer HTB { float ht_buf[]; };
layout(std430, binding = 9) readonly buffer Z0B { float z0_buf[]; };
layout(std430, binding = 10) writeonly buffer ZTB { float zt_buf[]; };
layout(std430, binding = 11) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 12) readonly buffer CHB { uvec2 chunktab[]; };
layout(std430, binding = 13) buffer STB { float state_buf[]; };  // [H, chunks, K, VP]
layout(std430, binding = 14) buffer DCB { float decay_buf[]; };  // [H, chunks, KD]

#include "../common/seqs.glsl"

float load_q(uint b, uint t, uint h, uint i) { return LOADE(q_buf[pc.q_base + b * pc.q_sb + t * pc.q_st + h * pc.q_sh + i]); }
float load_k(uint b, uint t, uint h, uint i) { return LOADE(k_buf[pc.k_base + b * pc.k_sb + t * pc.k_st + h * pc.k_sh + i]); }
// value column j; the virtual column V is all ones (it carries the normalizer z)
float load_v(uint b, uint t, uint h, uint j)
{
    if (NORMALIZE && j == V)
        return 1.0;
    return LOADE(v_buf[pc.v_base + b * pc.v_sb + t * pc.v_st + h * pc.v_sh + j]);
}
void store_o(uint b, uint t, uint h, uint j, float x) { o_buf[pc.o_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh + j] = STOREE(x); }

#include "decay.glsl"

#endif
