// Profiling hook of the gather-GEMM kernels: when kernels/cuda/gather_mlp.cu
// is compiled with POLAR_GATHER_MLP_TIMELINE (only bench/gather_mlp_timeline
// does; the library never is), thread 0 of every CTA records the global timer
// at a few points of its life, so that a launch's time can be split into
// launch ramp, waiting, streaming and reduction tail per CTA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace polar::kernels::cuda {

inline constexpr int kTimelineMaxCtas = 1024;

enum TimelineEvent : int {
  kTimelineEntry,      // the CTA starts
  kTimelineWaited,     // griddepcontrol.wait returned (the predecessor's outputs are visible)
  kTimelineFirstStep,  // the first pipeline step's tiles have landed in shared memory
  kTimelineLoopDone,   // the CTA's own steps are done
  kTimelineArrived,    // its partial is written and counted (= kTimelineLoopDone without splits)
  kTimelineExit,       // the CTA ends (after the epilogue, if it ran it)
  kTimelineSm,         // not a time: the multiprocessor it ran on
  kTimelineEvents,
};

// Copies the records of the latest launches, [2 (fc1, fc2)][kTimelineMaxCtas]
// [kTimelineEvents] (ns of the global timer; 0 where not reached), to host,
// then zeroes them if reset.
cudaError_t GatherMlpTimeline(uint64_t* host, bool reset);

}  // namespace polar::kernels::cuda
