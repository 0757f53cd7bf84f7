// See threads.h.
#include "kernels/cpu/threads.h"

#include <cblas.h>
#include <omp.h>

namespace polar::kernels::cpu {

void SetNumThreads(int n) {
  if (n <= 0) return;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int NumThreads() { return omp_get_max_threads(); }

}  // namespace polar::kernels::cpu
