// Tests: preemption signals go to gantry's own thread, never to a computing one. A handler that
// interrupts oneDNN's JIT GEMMs corrupts the heap (trainer/stop_signals.h); here signals rain on
// the process while the MLP's products run, and must be recorded with nothing corrupted.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "trainer/gemm_linear.h"
#include "trainer/stop_signals.h"

namespace gantry {
namespace {

bool stop_signals_blocked_here() {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, SIGTERM) == 1 && sigismember(&mask, SIGUSR1) == 1;
}

TEST(StopSignals, NoThreadButTheirOwnCanTakeThem) {
  EXPECT_TRUE(stop_signals_blocked_here());
  bool blocked_in_new_thread = false;
  std::thread([&] { blocked_in_new_thread = stop_signals_blocked_here(); }).join();
  EXPECT_TRUE(blocked_in_new_thread);
}

// The MLP GAN's first layer. With a handler in place of the routing, this test aborted in free()
// on 5 runs of 5 here.
TEST(StopSignals, SignalsDuringOneDnnGemmsAreRecordedAndCorruptNothing) {
  torch::manual_seed(0);
  torch::set_num_threads(2);  // OpenMP's threads too start after the routing, and block
  GemmLinear layer(784, 1200);
  const torch::Tensor x = torch::randn({64, 784});
  const torch::Tensor expected = torch::addmm(layer->bias, x, layer->weight.t()).detach();

  const StopSignalsArmed armed;
  std::atomic<bool> done{false};
  int sent = 0;
  std::thread sender([&] {
    for (; sent < 400 && !done.load(); ++sent) {
      kill(getpid(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  int products = 0;
  float worst = 0.f;
  for (auto start = std::chrono::steady_clock::now();
       products < 20 || std::chrono::steady_clock::now() - start < std::chrono::milliseconds(400); ++products) {
    layer->zero_grad();
    const torch::Tensor y = layer->forward(x);
    y.square().sum().backward();
    worst = std::max(worst, (y.detach() - expected).abs().max().item<float>());
  }
  done.store(true);
  sender.join();
  ASSERT_GT(sent, 20) << "too few signals to test anything";
  EXPECT_EQ(stop_signal_received(), SIGUSR1);
  EXPECT_LE(worst, 1e-4f) << "a product changed while signals arrived (" << products << " products)";
}

TEST(StopSignalsDeathTest, UnarmedASignalEndsTheProcessAsByDefault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        kill(getpid(), SIGTERM);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      testing::KilledBySignal(SIGTERM), "");
  EXPECT_EXIT(
      {
        { const StopSignalsArmed armed; }  // armed, then no longer
        kill(getpid(), SIGUSR1);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      testing::KilledBySignal(SIGUSR1), "");
}

}  // namespace
}  // namespace gantry

int main(int argc, char** argv) {
  gantry::route_stop_signals();  // before anything starts a thread, as gantry's main does
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
