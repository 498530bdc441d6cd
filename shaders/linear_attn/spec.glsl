// Causal linear attention: the specialization constants and option flags shared by the
// forward (common.glsl) and backward (bwd_common.glsl) kernels; they must match
// host/linear_attn.c (flags F_*) and each kernel's spec array.
#ifndef VKLA_LINEAR_ATTN_SPEC_GLSL
#define VKLA_LINEAR_ATTN_SPEC_GLSL

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 64;
layout(constant_id = 2) const uint V = 64;
layout(constant_id = 3) const uint H = 1;
layout(constant_id = 4) const uint FLAGS = 0;
layout(constant_id = 5) const uint P0 = 1;   // kernel-specific (see each kernel)
layout(constant_id = 6) const uint P1 = 1;
layout(constant_id = 7) const uint P2 = 1;

const bool HAS_G = (FLAGS & 1u) != 0u;
const bool HAS_GAMMA = (FLAGS & 2u) != 0u;
const bool HAS_GK = (FLAGS & 4u) != 0u;
const bool NORMALIZE = (FLAGS & 8u) != 0u;
const bool HAS_H0 = (FLAGS & 16u) != 0u;
const bool HAS_HT = (FLAGS & 32u) != 0u;
const bool VARLEN = (FLAGS & 64u) != 0u;
const bool HAS_Z0 = (FLAGS & 128u) != 0u;
const bool HAS_ZT = (FLAGS & 256u) != 0u;
const bool K_VEC4 = (FLAGS & 512u) != 0u;   // k may be read as vec4s (chunk_output only)

// Columns of the state: V, plus the normalizer z as column V with normalize.
const uint VP = V + (NORMALIZE ? 1u : 0u);
// Per-channel decay width of the chunk decay table.
const uint KD = HAS_GK ? K : 1u;

#endif
