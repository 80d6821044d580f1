// Fuzz target: the run config. The input is a YAML file; lines that start with "--set " are taken
// out of it and applied as overrides. load_config must return a Config or throw one ConfigError.
#include <sstream>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "trainer/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::string line, yaml;
  std::vector<std::string> overrides;
  while (std::getline(in, line)) {
    if (line.rfind("--set ", 0) == 0) overrides.push_back(line.substr(6));
    else yaml += line + "\n";
  }
  const auto file = gantry::fuzz::scratch() / "run.yaml";
  gantry::fuzz::write_file(file, reinterpret_cast<const uint8_t*>(yaml.data()), yaml.size());
  try {
    const gantry::Config config = gantry::load_config(file.string(), overrides);
    (void)gantry::to_yaml(config);  // what train writes to <run.dir>/config.yaml
    (void)gantry::config_digest(config);
    gantry::validate_for_world(config, 3);
  } catch (const gantry::ConfigError&) {
  }
  return 0;
}
