// remote_generate.h for builds without the services (POLAR_BUILD_SERVICES=OFF):
// --target is refused with a clear message.
#include "tools/polar/remote_generate.h"

namespace polar::cli {

bool HaveRemoteGenerate() { return false; }

absl::Status RunRemoteGenerate(const Args&, const SamplingParams&) {
  return absl::UnimplementedError("this polar was built without gRPC (POLAR_BUILD_SERVICES=OFF): --target is unavailable");
}

}  // namespace polar::cli
