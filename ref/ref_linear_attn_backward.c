/* ref_linear_attn_backward.c - float64 gradients of linear_attn (SPEC.md section 4). */
#include "vkla_ref.h"

int vkla_ref_linear_attn_backward(const vkla_ref_linear_attn_backward_args *a)
{
  (void)a;
  return -1;
}
