/* ref_delta_rule_backward.c - float64 gradients of delta_rule (SPEC.md sections 2 and 4),
 * by hand from the recurrence, one reverse step per token. Per sequence and value head the
 * forward states S_t are kept, then with dS the gradient of S_t (dht, or zero, at the end):
 *
 *   o_t = scale S_t^T q_t:         dS += scale q_t do_t^T,  dq_t = scale S_t do_t
 *   S_t = S'_t + k_t u_t^T:        dS' = dS,  dk_t += dS u_t,  du = dS^T k_t
 *   u_t = beta_t (v_t - p):        dv_t = beta_t du,  dbeta_t = du . (v_t - p),  dp = -beta_t du
 *   p = S'_t^T k_t:                dS' += k_t dp^T,  dk_t += S'_t dp
 *   S'_t = exp(g_t) S_{t-1}:       dg_t = <S'_t, dS'>,  dS_{t-1} = exp(g_t) dS'
 *
 * and dh0 = dS_{-1}. With l2norm, q and k above are the normalized x / n, n = sqrt(|x|^2 +
 * 1e-6), and the raw gradient is (dxn - xn (xn . dxn)) / n. dq and dk sum over the value heads
 * that read the q/k head.
 */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* xn = x / n (or x), returns 1 / n (or 1) */
static double normalize(double *xn, const double *x, size_t K, int l2norm)
{
  double inv = 1.0;
  if (l2norm) {
    double ss = 0.0;
    for (size_t c = 0; c < K; c++)
      ss += x[c] * x[c];
    inv = 1.0 / sqrt(ss + 1e-6);
  }
  for (size_t c = 0; c < K; c++)
    xn[c] = x[c] * inv;
  return inv;
}

/* dst += the gradient w.r.t. the raw x of the normalized xn, given dxn */
static void add_raw_grad(double *dst, const double *xn, const double *dxn, double inv, size_t K,
                         int l2norm)
{
  double dot = 0.0;
  if (l2norm)
    for (size_t c = 0; c < K; c++)
      dot += xn[c] * dxn[c];
  for (size_t c = 0; c < K; c++)
    dst[c] += inv * (dxn[c] - xn[c] * dot);
}

int vkla_ref_delta_rule_backward(const vkla_ref_delta_rule_backward_args *a)
{
  if (!a || !a->fwd || !a->dout)
    return -1;
  const vkla_ref_delta_rule_args *f = a->fwd;
  int nseq;
  if (f->H < 1 || f->HV < 1 || f->K < 1 || f->V < 1 || f->HV % f->H != 0)
    return -1;
  if (!f->q || !f->k || !f->v || !f->beta)
    return -1;
  if ((a->dg && !f->g) || (a->dh0 && !f->h0))
    return -1;
  if (vkla_ref_seq_check(f->B, f->T, f->cu_seqlens, f->N, &nseq))
    return -1;

  const size_t H = (size_t)f->H, HV = (size_t)f->HV, K = (size_t)f->K, V = (size_t)f->V;
  const size_t T = (size_t)f->T, group = HV / H, B = (size_t)f->B;
  size_t maxlen = 0;
  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(f->T, f->cu_seqlens, n, &b, &t0, &t1);
    if ((size_t)(t1 - t0) > maxlen)
      maxlen = (size_t)(t1 - t0);
  }
  /* states S_{t0-1} .. S_{t1-1} of one sequence and head */
  double *Sall = malloc((maxlen + 1) * K * V * sizeof *Sall);
  double *dS = malloc(K * V * sizeof *dS);
  double *qn = malloc(K * sizeof *qn), *kn = malloc(K * sizeof *kn);
  double *dqn = malloc(K * sizeof *dqn), *dkn = malloc(K * sizeof *dkn);
  double *u = malloc(V * sizeof *u), *p = malloc(V * sizeof *p), *du = malloc(V * sizeof *du);
  int ok = Sall && dS && qn && kn && dqn && dkn && u && p && du;
  if (ok) {
    if (a->dq)
      memset(a->dq, 0, B * T * H * K * sizeof(double));
    if (a->dk)
      memset(a->dk, 0, B * T * H * K * sizeof(double));
  }

  for (int n = 0; ok && n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(f->T, f->cu_seqlens, n, &b, &t0, &t1);
    for (size_t hv = 0; hv < HV; hv++) {
      const size_t hq = hv / group, sh = (size_t)n * HV + hv;
      /* forward: Sall[i] is the state after i tokens */
      if (f->h0)
        memcpy(Sall, f->h0 + sh * K * V, K * V * sizeof *Sall);
      else
        memset(Sall, 0, K * V * sizeof *Sall);
      for (int t = t0; t < t1; t++) {
        const size_t row = (size_t)b * T + (size_t)t, tq = row * H + hq, tv = row * HV + hv;
        const double *S0 = Sall + (size_t)(t - t0) * K * V;
        double *S1 = Sall + (size_t)(t - t0 + 1) * K * V;
        const double d = f->g ? exp(f->g[tv]) : 1.0;
        normalize(kn, f->k + tq * K, K, f->l2norm);
        for (size_t i = 0; i < K * V; i++)
          S1[i] = d * S0[i];
        for (size_t j = 0; j < V; j++) {
          double pr = 0.0;
          for (size_t c = 0; c < K; c++)
            pr += kn[c] * S1[c * V + j];
          u[j] = f->beta[tv] * (f->v[tv * V + j] - pr);
        }
        for (size_t c = 0; c < K; c++)
          for (size_t j = 0; j < V; j++)
            S1[c * V + j] += kn[c] * u[j];
      }
      /* reverse */
      if (a->dht)
        memcpy(dS, a->dht + sh * K * V, K * V * sizeof *dS);
      else
        memset(dS, 0, K * V * sizeof *dS);
      for (int t = t1 - 1; t >= t0; t--) {
        const size_t row = (size_t)b * T + (size_t)t, tq = row * H + hq, tv = row * HV + hv;
        const double *S0 = Sall + (size_t)(t - t0) * K * V;     /* S_{t-1} */
        const double *S1 = Sall + (size_t)(t - t0 + 1) * K * V; /* S_t */
        const double *dot_ = a->dout + tv * V, *vt = f->v + tv * V;
        const double beta = f->beta[tv], d = f->g ? exp(f->g[tv]) : 1.0;
        const double iq = normalize(qn, f->q + tq * K, K, f->l2norm);
        const double ik = normalize(kn, f->k + tq * K, K, f->l2norm);
        /* o_t */
        for (size_t c = 0; c < K; c++) {
          double acc = 0.0;
          for (size_t j = 0; j < V; j++) {
            acc += S1[c * V + j] * dot_[j];
            dS[c * V + j] += f->scale * qn[c] * dot_[j];
          }
          dqn[c] = f->scale * acc;
        }
        /* p = S'^T k with S' = d S_{t-1}; u = beta (v - p) */
        for (size_t j = 0; j < V; j++) {
          double pr = 0.0;
          for (size_t c = 0; c < K; c++)
            pr += kn[c] * d * S0[c * V + j];
          p[j] = pr;
          u[j] = beta * (vt[j] - pr);
        }
        /* S_t = S' + k u^T */
        double db = 0.0;
        for (size_t j = 0; j < V; j++) {
          double acc = 0.0;
          for (size_t c = 0; c < K; c++)
            acc += dS[c * V + j] * kn[c];
          du[j] = acc;
          db += acc * (vt[j] - p[j]);
        }
        for (size_t c = 0; c < K; c++) {
          double acc = 0.0, acc2 = 0.0;
          for (size_t j = 0; j < V; j++) {
            acc += dS[c * V + j] * u[j];
            acc2 += d * S0[c * V + j] * (-beta * du[j]); /* S' dp */
          }
          dkn[c] = acc + acc2;
        }
        if (a->dv)
          for (size_t j = 0; j < V; j++)
            a->dv[tv * V + j] = beta * du[j];
        if (a->dbeta)
          a->dbeta[tv] = db;
        /* dS' = dS + k dp^T; dg = <S', dS'>; dS_{t-1} = d dS' */
        double dg = 0.0;
        for (size_t c = 0; c < K; c++)
          for (size_t j = 0; j < V; j++) {
            const double ds = dS[c * V + j] - beta * kn[c] * du[j];
            dg += d * S0[c * V + j] * ds;
            dS[c * V + j] = d * ds;
          }
        if (a->dg)
          a->dg[tv] = dg;
        if (a->dq)
          add_raw_grad(a->dq + tq * K, qn, dqn, iq, K, f->l2norm);
        if (a->dk)
          add_raw_grad(a->dk + tq * K, kn, dkn, ik, K, f->l2norm);
      }
      if (a->dh0)
        memcpy(a->dh0 + sh * K * V, dS, K * V * sizeof *dS);
    }
  }
  free(Sall);
  free(dS);
  free(qn);
  free(kn);
  free(dqn);
  free(dkn);
  free(u);
  free(p);
  free(du);
  return ok ? 0 : -1;
}
