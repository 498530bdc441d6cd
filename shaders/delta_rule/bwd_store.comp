#version 450
// Delta rule backward, step 6 (parallel over all chunks and q/k heads): the gradients from the
// backward records to the caller's tensors. dq and dk sum the records of the value heads that
// share the q/k head; dv, dbeta and dg are copied per value head. Only the outputs whose flag
// is set are written. Spec constants, push constants and bindings must match
// host/delta_rule_backward.c. Grid: x = 1, y = q/k heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "../common/dtype.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 64;
layout(constant_id = 2) const uint V = 64;
layout(constant_id = 3) const uint P0 = 64;

layout(push_constant) uniform Params {
    uint T;
    uint h_begin, s_begin, c_begin; // first q/k head, sequence and chunk of this dispatch
    uint flags;
    uint group;                     // HV / H
    uint HV;
    float scale;                    // unused
    uint nchunks;
    uint dq_base, dk_base, dv_base, bw_base, db_base, dg_base;
    uint dq_sb, dq_st, dq_sh;
    uint dk_sb, dk_st, dk_sh;
    uint dv_sb, dv_st, dv_sh;
} pc;

#define OUT_DQ ((pc.flags & 1u) != 0u)
#define OUT_DK ((pc.flags & 2u) != 0u)
#define OUT_DV ((pc.flags & 4u) != 0u)
#define OUT_DB ((pc.flags & 8u) != 0u)
#define VARLEN ((pc.flags & 16u) != 0u)
#define OUT_DG ((pc.flags & 32u) != 0u)

layout(std430, binding = 0) writeonly buffer DQB { ELEM dq_buf[]; };
layout(std430, binding = 1) writeonly buffer DKB { ELEM dk_buf[]; };
layout(std430, binding = 2) writeonly buffer DVB { ELEM dv_buf[]; };
layout(std430, binding = 3) readonly buffer BWB { float bwd_buf[]; };
layout(std430, binding = 4) writeonly buffer DBB { float db_buf[]; };
layout(std430, binding = 5) writeonly buffer DGB { float dg_buf[]; };
layout(std430, binding = 8) readonly buffer SEQB { uvec4 seqtab[]; };
layout(std430, binding = 9) readonly buffer CHB { uvec2 chunktab[]; };

#include "../common/seqs.glsl"
#include "bwd_layout.glsl"

void main()
{
    const uint hq = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, P0, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(P0, len - local0);
    const uint tb = t0 + local0;
    const uint K4F = 4u * BR_K4, V4F = 4u * BR_V4;

    if (OUT_DQ || OUT_DK)
        [[dont_unroll]] for (uint e = elem0(); e < L * K; e += elem_step()) {
            const uint i = e / K, x = e % K;
            float dq = 0.0, dk = 0.0;
            for (uint m = 0; m < pc.group; m++) {
                const uint br = bwd_rec(pc.bw_base, hq * pc.group + m, c);
                dq += bwd_buf[br + 4u * R_DQ + i * K4F + x];
                dk += bwd_buf[br + 4u * R_DK + i * K4F + x];
            }
            if (OUT_DQ)
                dq_buf[pc.dq_base + b * pc.dq_sb + (tb + i) * pc.dq_st + hq * pc.dq_sh + x] = STOREE(dq);
            if (OUT_DK)
                dk_buf[pc.dk_base + b * pc.dk_sb + (tb + i) * pc.dk_st + hq * pc.dk_sh + x] = STOREE(dk);
        }
    for (uint m = 0; m < pc.group; m++) {
        const uint h = hq * pc.group + m;
        const uint br = bwd_rec(pc.bw_base, h, c);
        if (OUT_DV)
            [[dont_unroll]] for (uint e = elem0(); e < L * V; e += elem_step()) {
                const uint i = e / V, v = e % V;
                dv_buf[pc.dv_base + b * pc.dv_sb + (tb + i) * pc.dv_st + h * pc.dv_sh + v] =
                    STOREE(bwd_buf[br + 4u * R_DV + i * V4F + v]);
            }
        for (uint i = elem0(); i < L; i += elem_step()) {
            const uint ti = (b * pc.T + tb + i) * pc.HV + h;
            if (OUT_DB)
                db_buf[pc.db_base + ti] = bwd_buf[br + 4u * (R_DB + i)];
            if (OUT_DG)
                dg_buf[pc.dg_base + ti] = bwd_buf[br + 4u * (R_DB + i) + 3u];
        }
    }
}
