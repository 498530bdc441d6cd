/* ref_delta_rule_backward.c - float64 gradients of delta_rule (SPEC.md section 4). */
#include "vkla_ref.h"

int vkla_ref_delta_rule_backward(const vkla_ref_delta_rule_backward_args *a)
{
  (void)a;
  return -1;
}
