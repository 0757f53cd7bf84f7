// remote_bench.h for builds without the services (POLAR_BUILD_SERVICES=OFF):
// `bench --target` is refused with a clear message.
#include "tools/polar/remote_bench.h"

namespace polar::cli {

bool HaveRemoteBench() { return false; }

absl::Status RunRemoteBench(const Args&) {
  return absl::UnimplementedError("this polar was built without gRPC (POLAR_BUILD_SERVICES=OFF): --target is unavailable");
}

}  // namespace polar::cli
