// Implements: `gantry inspect CKPT [--against CKPT2]`: a checkpoint's manifest summary and its
// world-size-independent digest, or the max abs difference per tensor group between two.
#pragma once

#include <ostream>
#include <string>

namespace gantry {

// Resolves a checkpoint directory, a checkpoints folder (follows `latest`) or a run directory.
std::string resolve_checkpoint_dir(const std::string& path);

void inspect_checkpoint(const std::string& path, std::ostream& out);
void compare_checkpoints(const std::string& a, const std::string& b, std::ostream& out);

}  // namespace gantry
