// Delta rule backward: the per (value head, chunk) backward record, in vec4 units (rows padded
// to whole vec4s; C = P0, K4 = ceil(K/4), V4 = ceil(V/4), C4 = C/4). host/delta_rule_backward.c
// mirrors this layout. The first part holds the gradients of the chunk's tokens, read by
// bwd_store.comp; the rest are intermediates of bwd_local, bwd_scan and bwd_grad.
//   DQ [C][K4], DK [C][K4]  gradient of the raw q and k as seen by this value head
//   DV [C][V4]               gradient of v
//   DB [C]                   per token (dbeta, two terms of dg, dg)
//   DSN [K][V4]              scale (Q e^G)^T dO (bwd_local), then the gradient of the state
//                            leaving the chunk (bwd_scan)
//   DVP [C][V4]              scale ((Q K^T) . D)^T dO (bwd_local), then dV' (bwd_scan)
//   D [C][V4]                T^T dV'
//   E1, E2, F [C][K4]        dO S^T, D S^T, V' dS_next^T
//   QK, KK, MW, PW [C][C4]   chunk matrices (see bwd_grad.comp)
//   RED [16]                 partial sums of <S, dS_next>, one per workgroup of bwd_grad
//
// The per-chunk kernels spread each step's elements over all the workgroups of the chunk
// (grid x, at most 64) and all their threads, so every invocation runs few loop iterations:
// CPU drivers may stop a shader invocation after a fixed number of loop iterations.
#ifndef VKLA_DELTA_RULE_BWD_LAYOUT_GLSL
#define VKLA_DELTA_RULE_BWD_LAYOUT_GLSL

const uint BR_C = P0;
const uint BR_K4 = (K + 3u) / 4u;
const uint BR_V4 = (V + 3u) / 4u;
const uint BR_C4 = BR_C / 4u;
const uint R_DQ = 0u;
const uint R_DK = R_DQ + BR_C * BR_K4;
const uint R_DV = R_DK + BR_C * BR_K4;
const uint R_DB = R_DV + BR_C * BR_V4;
const uint R_DSN = R_DB + BR_C;
const uint R_DVP = R_DSN + K * BR_V4;
const uint R_D = R_DVP + BR_C * BR_V4;
const uint R_E1 = R_D + BR_C * BR_V4;
const uint R_E2 = R_E1 + BR_C * BR_K4;
const uint R_F = R_E2 + BR_C * BR_K4;
const uint R_QK = R_F + BR_C * BR_K4;
const uint R_KK = R_QK + BR_C * BR_C4;
const uint R_MW = R_KK + BR_C * BR_C4;
const uint R_PW = R_MW + BR_C * BR_C4;
const uint R_RED = R_PW + BR_C * BR_C4;
const uint R_SIZE = R_RED + 16u;

// float index of the record of value head h, chunk c (base: the binding's base, vec4 units)
uint bwd_rec(uint base, uint h, uint c) { return 4u * (base + (h * pc.nchunks + c) * R_SIZE); }

// this invocation's first element of a step, and the stride over the elements
uint elem0() { return gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x; }
uint elem_step() { return gl_NumWorkGroups.x * gl_WorkGroupSize.x; }

#endif
