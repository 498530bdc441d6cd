/* ref_lion_backward.c - float64 gradients of lion (SPEC.md section 4). */
#include "vkla_ref.h"

int vkla_ref_lion_backward(const vkla_ref_lion_backward_args *a)
{
  (void)a;
  return -1;
}
