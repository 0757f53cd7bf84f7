// The CPU backend: fp32 everywhere, GEMMs through OpenBLAS, the other
// operations through kernels/cpu (OpenMP over all cores). It is the reference
// the CUDA backend is checked against.
#pragma once

#include <memory>

#include "engine/backend/backend.h"

namespace polar {

std::unique_ptr<Backend> CreateCpuBackend();

}  // namespace polar
