// Causal linear attention: the per-token log decays, shared by the forward and backward
// kernels. Needs the spec constants H, K, HAS_G, HAS_GAMMA, HAS_GK, the push constants T,
// g_base, gamma_base, gk_base and the buffers g_buf, gamma_buf, gk_buf.
#ifndef VKLA_LINEAR_ATTN_DECAY_GLSL
#define VKLA_LINEAR_ATTN_DECAY_GLSL

// Scalar log decay of token t (g + g_gamma), 0 without gates.
float log_decay_scalar(uint b, uint t, uint h)
{
    float d = 0.0;
    if (HAS_G)
        d += g_buf[pc.g_base + (b * pc.T + t) * H + h];
    if (HAS_GAMMA)
        d += gamma_buf[pc.gamma_base + h];
    return d;
}
// Per-channel part (gk) of the log decay.
float log_decay_channel(uint b, uint t, uint h, uint i)
{
    return HAS_GK ? gk_buf[pc.gk_base + ((b * pc.T + t) * H + h) * K + i] : 0.0;
}

#endif
