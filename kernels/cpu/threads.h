// Thread count of the CPU kernels (OpenMP loops and OpenBLAS GEMMs).
#pragma once

namespace polar::kernels::cpu {

// n <= 0 keeps the libraries' defaults (all cores).
void SetNumThreads(int n);
int NumThreads();

}  // namespace polar::kernels::cpu
