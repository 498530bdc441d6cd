#version 450
// LION backward: the log-decay gradients from the per-token terms.
// With w_u, r_u of token u (binding 8: pc.xs pairs [B, T, H, xs, 2] that add up to them, which
// the dq and dk outputs write: F_TERMS in chunk_output.comp), the
// gradient of token t's log decay is da_t = sum_(u >= t) w_u - r_u over its own sequence: a
// reverse cumulative sum (each lane takes a contiguous 64th of the sequence: few barriers
// however long the sequence).
// pc.cfg bit 16: write da into dg (binding 3, [B, T, H] f32); bit 17: write the sequence's sum
// of da into the partials (binding 9, [N, H]). bit 18 (final step): dg_gamma[h] (binding 3) =
// the sum of the partials of the pc.xs sequences, in order (no float atomics).
// bit 19: the call is one piece of a longer sequence, run from the last piece to the first
// (host/lion_tsplit.c, one sequence per call): binding 9 holds [2, H] floats, row 1 the sum of
// w over the later pieces (added to this piece's suffix sums, then advanced by its own), row 0
// the running sum of da over the pieces done (added to instead of written, with bit 17).
// Grid: x = 1, y = heads, z = sequences (final step: z = 1). Lanes: 64.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint OUT_DG = 1u << 16u, OUT_PARTIAL = 1u << 17u, FINAL = 1u << 18u, CARRY = 1u << 19u;

shared float s_x[TW];
shared float s_sum[TW];

// The sum of the pairs of row (token and head) row.
vec2 pair(uint row)
{
    vec2 wr = vec2(0.0);
    for (uint i = 0u; i < pc.xs; i++) {
        const uint o = pc.st_base + 2u * (row * pc.xs + i);
        wr += vec2(st_buf[o], st_buf[o + 1u]);
    }
    return wr;
}

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    if ((pc.cfg & FINAL) != 0u) {
        if (lid == 0u) {
            float acc = 0.0;
            for (uint s = 0u; s < pc.xs; s++)
                acc += z_buf[pc.z_base + s * pc.H + h];
            o_buf[pc.o_base + h] = acc;
        }
        return;
    }
    const uint s = pc.s_begin + gl_WorkGroupID.z;
    uint b, t0, len;
    seq_info(s, b, t0, len);
    // lane l owns the tokens [a0, a1): its total, the suffix sums of the totals over the lanes
    // (the carry of the later tokens), then a serial reverse pass over its own tokens
    const uint per = (len + TW - 1u) / TW;
    const uint a0 = min(lid * per, len), a1 = min(a0 + per, len);
    const uint row0 = (b * pc.T + t0) * pc.H + h;
    float own = 0.0;
    for (uint t = a0; t < a1; t++)
        own += pair(row0 + t * pc.H).x;
    s_x[lid] = own;
    [[unroll]] for (uint off = 1u; off < TW; off *= 2u) {
        barrier();
        const float y = s_x[lid] + (lid + off < TW ? s_x[lid + off] : 0.0);
        barrier();
        s_x[lid] = y;
    }
    barrier();
    const bool carry = (pc.cfg & CARRY) != 0u;
    const float later = carry ? z_buf[pc.z_base + pc.H + h] : 0.0;
    float run = s_x[lid] - own + later, total = 0.0;
    for (uint t = a1; t > a0; t--) {
        const uint row = row0 + (t - 1u) * pc.H;
        const vec2 wr = pair(row);
        run += wr.x;
        const float da = run - wr.y;
        total += da;
        if ((pc.cfg & OUT_DG) != 0u)
            o_buf[pc.o_base + row] = da;
    }
    if ((pc.cfg & OUT_PARTIAL) != 0u) {
        s_sum[lid] = total;
        barrier();
        if (lid == 0u) {
            float acc = 0.0;
            for (uint i = 0u; i < TW; i++)
                acc += s_sum[i];
            if (carry)
                z_buf[pc.z_base + h] += acc;
            else
                z_buf[pc.z_base + s * pc.H + h] = acc;
        }
    }
    if (carry) {
        barrier();   // every lane has read the carry
        if (lid == 0u)
            z_buf[pc.z_base + pc.H + h] = later + s_x[0];
    }
}
