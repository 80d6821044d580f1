// Implements: MLP and DCGAN generators and discriminators, and their initialisation
// (DCGAN: N(0, 0.02) weights, BatchNorm N(1, 0.02), as Radford et al.).
#include "trainer/models.h"

#include <array>
#include <numeric>
#include <tuple>

#include "trainer/device.h"
#include "trainer/ema.h"
#include "trainer/gemm_linear.h"

namespace gantry {
namespace nn = torch::nn;

MlpGeneratorImpl::MlpGeneratorImpl(int64_t z_dim, const std::vector<int64_t>& hidden,
                                   datasets::RecordShape out, bool tanh_output)
    : shape(out) {
  nn::Sequential seq;
  int64_t in = z_dim;
  for (int64_t width : hidden) {
    seq->push_back(GemmLinear(in, width));
    // In place: the Linear's output is its own, and LeakyReLU's backward needs only its result.
    seq->push_back(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2).inplace(true)));
    in = width;
  }
  seq->push_back(GemmLinear(in, out.numel()));
  if (tanh_output) seq->push_back(nn::Tanh());
  net = register_module("net", seq);
}

torch::Tensor MlpGeneratorImpl::forward(const torch::Tensor& z) {
  return net->forward(z).view({z.size(0), shape.channels, shape.height, shape.width});
}

LabelProjectionImpl::LabelProjectionImpl(int64_t classes, int64_t features) {
  torch::NoGradGuard no_grad;
  embed = register_parameter("embed", torch::randn({classes, features}) * 0.02);
}

torch::Tensor LabelProjectionImpl::forward(const torch::Tensor& features, const torch::Tensor& labels) {
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == features.size(0),
              "a conditional D needs one label per sample: ", features.size(0), " samples, labels ",
              labels.defined() ? c10::str(labels.sizes()) : std::string("none"));
  const torch::Tensor rows = embed.index_select(0, labels.to(embed.device(), torch::kInt64));
  // In fp32 under autocast, as the losses: the features may arrive in bf16.
  return (rows * features.flatten(1).to(torch::kFloat32)).sum(1);
}

MlpDiscriminatorImpl::MlpDiscriminatorImpl(datasets::RecordShape in_shape, const std::vector<int64_t>& hidden_widths,
                                           double dropout, int64_t maxout, double input_dropout, int64_t classes)
    : hidden(hidden_widths), p(dropout), pieces(maxout), p_input(input_dropout), inputs(in_shape.numel()) {
  TORCH_CHECK(pieces >= 1, "maxout units need at least one piece, got ", pieces);
  nn::Sequential seq;
  int64_t in = inputs;
  for (int64_t width : hidden) {
    seq->push_back(GemmLinear(in, width * pieces));
    if (pieces == 1) {
      seq->push_back(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2).inplace(true)));
    } else {
      const int64_t k = pieces;
      seq->push_back(nn::Functional([k](const torch::Tensor& h) { return std::get<0>(h.view({h.size(0), -1, k}).max(2)); }));
    }
    in = width;
  }
  seq->push_back(GemmLinear(in, 1));
  net = register_module("net", seq);
  if (classes > 0) projection = register_module("projection", LabelProjection(classes, in));
}

int64_t MlpDiscriminatorImpl::dropout_columns() const {
  return (p_input > 0 ? inputs : 0) + (p > 0 ? std::accumulate(hidden.begin(), hidden.end(), int64_t{0}) : 0);
}

torch::Tensor MlpDiscriminatorImpl::forward(const torch::Tensor& x, const torch::Tensor& u,
                                           const torch::Tensor& labels) {
  const bool training = is_training();
  if (training && dropout_columns() > 0 && u.defined())
    TORCH_CHECK(u.dim() == 2 && u.size(0) == x.size(0) && u.size(1) == dropout_columns(),
                "D's dropout draws must be [", x.size(0), ", ", dropout_columns(), "], got ", u.sizes());
  int64_t column = 0;
  // Drops h's units with probability q, by the next h.size(1) columns of u when it is given.
  auto drop = [&](const torch::Tensor& h, double q) {
    if (q == 0 || !training) return h;
    if (!u.defined()) return torch::dropout(h, q, /*train=*/true);
    const torch::Tensor keep = u.slice(1, column, column + h.size(1)).to(h.device()).ge(q);
    column += h.size(1);
    return h * (keep.to(h.scalar_type()) * static_cast<float>(1 / (1 - q)));
  };
  torch::Tensor h = drop(x.flatten(1), p_input);
  for (size_t l = 0; l < hidden.size(); ++l) {  // net: (Linear, activation) per hidden layer, then Linear
    h = (net->begin() + static_cast<std::ptrdiff_t>(2 * l + 1))->forward(net[2 * l]->as<GemmLinear>()->forward(h));
    h = drop(h, p);
  }
  const torch::Tensor logits = net[2 * hidden.size()]->as<GemmLinear>()->forward(h).view({-1});
  return projection ? logits + projection->forward(h, labels) : logits;
}

namespace {

// A transposed convolution is the input gradient of the convolution with the same weight, and its
// backward is that convolution (input gradient) and the convolution's weight gradient taken with
// the roles of input and output swapped. LibTorch 1.13 runs ConvTranspose2d through its own
// im2col + GEMM kernels on the CPU; these three run through oneDNN, as D's convolutions do.
struct OneDnnTransposedConv : torch::autograd::Function<OneDnnTransposedConv> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               int64_t stride, int64_t padding) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    const int64_t h = (x.size(2) - 1) * stride - 2 * padding + w.size(2);
    const int64_t wd = (x.size(3) - 1) * stride - 2 * padding + w.size(3);
    const torch::Tensor output_shape = x.new_empty({1}).expand({x.size(0), w.size(1), h, wd});  // sizes only
    return std::get<0>(at::convolution_backward(x, output_shape, w, c10::nullopt, {stride, stride},
                                                {padding, padding}, {1, 1}, false, {0, 0}, 1, {true, false, false}));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t stride = ctx->saved_data["stride"].toInt(), padding = ctx->saved_data["padding"].toInt();
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) dx = at::conv2d(g, saved[1], {}, stride, padding);
    if (ctx->needs_input_grad(1))
      dw = std::get<1>(at::convolution_backward(saved[0], g, saved[1], c10::nullopt, {stride, stride},
                                                {padding, padding}, {1, 1}, false, {0, 0}, 1, {false, true, false}));
    return {dx, dw, torch::Tensor(), torch::Tensor()};
  }
};

// G's transposed convolutions: the same module and parameters as ConvTranspose2d (checkpoints are
// unchanged), run as OneDnnTransposedConv for fp32 on the CPU where that is faster. Measured
// (bench/RESULTS.md): 1.35-2.4x for the wide layers, 0.39x for the last one (1 or 3 output
// channels), which therefore stays on LibTorch's kernel. Under bf16 autocast the wide layers run
// oneDNN's bf16 kernels, where LibTorch 1.13's autocast would leave them to its fp32 kernel:
// the DCGAN's bf16 step went from 0.73x to 1.6x its fp32 step (bench/RESULTS.md).
struct UpConvImpl : nn::ConvTranspose2dImpl {
  // Square kernel, stride and padding, no bias, no dilation, groups or output padding: all the
  // DCGAN generators need. The stride and padding are kept here rather than read back from the
  // options, whose padding is a c10::variant in LibTorch 1.13 and a std::variant in 2.x.
  UpConvImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
      : nn::ConvTranspose2dImpl(nn::ConvTranspose2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false)),
        stride_(stride),
        padding_(padding) {}

  torch::Tensor forward(const torch::Tensor& x, const c10::optional<at::IntArrayRef>& output_size = c10::nullopt) {
    const bool onednn = !output_size && x.is_cpu() && x.dim() == 4 && weight.scalar_type() == torch::kFloat32 &&
                        options.out_channels() >= 16;
    if (!onednn) return nn::ConvTranspose2dImpl::forward(x, output_size);
    if (autocast_enabled(c10::kCPU)) {
      // bf16 autocast (gantry's only autocast dtype): the layer in bf16, as autocast runs D's
      // convolutions, through oneDNN's bf16 kernels where the CPU has them (AVX-512). The casts
      // are autograd's: the weight's gradient is computed in bf16 and accumulates in fp32.
      // Elsewhere LibTorch's bf16 fallback would be slower than fp32 and 6 % off: fp32 it is,
      // as LibTorch 1.13's autocast leaves ConvTranspose2d.
      if (cpu_has_onednn_bf16())
        return OneDnnTransposedConv::apply(x.to(torch::kBFloat16), weight.to(torch::kBFloat16), stride_, padding_);
      return OneDnnTransposedConv::apply(x.to(torch::kFloat32), weight, stride_, padding_);
    }
    if (x.scalar_type() != torch::kFloat32) return nn::ConvTranspose2dImpl::forward(x, output_size);
    return OneDnnTransposedConv::apply(x, weight, stride_, padding_);
  }

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(c10::optional<at::IntArrayRef>())})

 private:
  int64_t stride_, padding_;
};
TORCH_MODULE(UpConv);

nn::Conv2d down(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(bias));
}

void dcgan_init(nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::normal_(conv->weight, 0.0, 0.02);
    } else if (auto* convt = m->as<nn::ConvTranspose2d>()) {
      nn::init::normal_(convt->weight, 0.0, 0.02);
    } else if (auto* bn = m->as<nn::BatchNorm2d>(); bn && bn->options.affine()) {
      nn::init::normal_(bn->weight, 1.0, 0.02);
      nn::init::zeros_(bn->bias);
    } else if (auto* cbn = m->as<ClassBatchNorm2d>()) {
      nn::init::normal_(cbn->gain, 1.0, 0.02);
      nn::init::zeros_(cbn->bias);
    }
  }
}

// t / |t| for a vector (SpectralConv2d's singular-vector estimates).
torch::Tensor unit_vector(const torch::Tensor& t) {
  return nn::functional::normalize(t, nn::functional::NormalizeFuncOptions().dim(0).eps(1e-12));
}

bool is_mnist_shape(datasets::RecordShape s) { return s.channels == 1 && s.height == 28 && s.width == 28; }
bool is_cifar_shape(datasets::RecordShape s) { return s.channels == 3 && s.height == 32 && s.width == 32; }

}  // namespace

SpectralConv2dImpl::SpectralConv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
    : nn::Conv2dImpl(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding)),
      stride_(stride),
      padding_(padding) {
  torch::NoGradGuard no_grad;
  nn::init::xavier_uniform_(weight);
  nn::init::zeros_(bias);
  u = register_buffer("u", unit_vector(torch::randn({out})));
  v = register_buffer("v", unit_vector(torch::randn({in * kernel * kernel})));
}

torch::Tensor SpectralConv2dImpl::normalized_weight() {
  const torch::Tensor w = weight.flatten(1);  // [out, in * k * k]
  if (is_training()) {
    torch::NoGradGuard no_grad;
    const torch::Tensor wd = w.detach();
    v.copy_(unit_vector((wd * u.unsqueeze(1)).sum(0)));  // W^T u / |W^T u|
    u.copy_(unit_vector((wd * v.unsqueeze(0)).sum(1)));  // W v / |W v|
  }
  // sigma = u^T W v, differentiable in W; u v^T is a new tensor, so later in-place updates of
  // u and v (another forward pass before this one's backward) leave this graph intact.
  const torch::Tensor sigma = (w * torch::outer(u, v)).sum();
  return weight / sigma;
}

torch::Tensor SpectralConv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, normalized_weight(), bias, stride_, padding_);
}

ClassBatchNorm2dImpl::ClassBatchNorm2dImpl(int64_t classes, int64_t channels) {
  norm = register_module("norm", nn::BatchNorm2d(nn::BatchNorm2dOptions(channels).affine(false)));
  gain = register_parameter("gain", torch::ones({classes, channels}));
  bias = register_parameter("bias", torch::zeros({classes, channels}));
}

torch::Tensor ClassBatchNorm2dImpl::forward(const torch::Tensor& x, const torch::Tensor& one_hot) {
  const int64_t n = x.size(0), c = x.size(1);
  return torch::addcmul(one_hot.matmul(bias).view({n, c, 1, 1}), norm->forward(x), one_hot.matmul(gain).view({n, c, 1, 1}));
}

DcganGeneratorImpl::DcganGeneratorImpl(int64_t z_dim, int64_t w, datasets::RecordShape out, int64_t blocks,
                                       int64_t class_norm_classes)
    : class_norm_classes(class_norm_classes) {
  TORCH_CHECK(class_norm_classes >= 0 && class_norm_classes < z_dim,
              "G's class-conditional BatchNorm reads a one-hot label from the last columns of its ", z_dim,
              " inputs; ", class_norm_classes, " classes do not fit");
  nn::Sequential seq;
  auto batch_norm = [&](int64_t channels) {
    if (class_norm_classes > 0) {
      seq->push_back(ClassBatchNorm2d(class_norm_classes, channels));
    } else {
      seq->push_back(nn::BatchNorm2d(channels));
    }
  };
  // One hidden resolution: its upsampling, then `blocks` stride-1 convolutions at the same size.
  auto hidden = [&](nn::AnyModule up, int64_t channels) {
    seq->push_back(std::move(up));
    batch_norm(channels);
    seq->push_back(nn::ReLU(true));
    for (int64_t b = 0; b < blocks; ++b) {
      seq->push_back(down(channels, channels, 3, 1, 1, /*bias=*/false));
      batch_norm(channels);
      seq->push_back(nn::ReLU(true));
    }
  };
  if (is_mnist_shape(out)) {  // 1x1 -> 7x7 -> 14x14 -> 28x28
    hidden(nn::AnyModule(UpConv(z_dim, 4 * w, 7, 1, 0)), 4 * w);
    hidden(nn::AnyModule(UpConv(4 * w, 2 * w, 4, 2, 1)), 2 * w);
    seq->push_back(UpConv(2 * w, out.channels, 4, 2, 1));
  } else {  // 1x1 -> 4x4 -> 8x8 -> 16x16 -> 32x32
    hidden(nn::AnyModule(UpConv(z_dim, 4 * w, 4, 1, 0)), 4 * w);
    hidden(nn::AnyModule(UpConv(4 * w, 2 * w, 4, 2, 1)), 2 * w);
    hidden(nn::AnyModule(UpConv(2 * w, w, 4, 2, 1)), w);
    seq->push_back(UpConv(w, out.channels, 4, 2, 1));
  }
  seq->push_back(nn::Tanh());
  net = register_module("net", seq);
  dcgan_init(*this);
}

torch::Tensor DcganGeneratorImpl::forward(const torch::Tensor& z) {
  torch::Tensor h = z.view({z.size(0), z.size(1), 1, 1});
  if (class_norm_classes == 0) return net->forward(h);
  const torch::Tensor one_hot = z.narrow(1, z.size(1) - class_norm_classes, class_norm_classes);
  for (auto& layer : *net) {
    if (auto* cbn = layer.ptr()->as<ClassBatchNorm2d>()) {
      h = cbn->forward(h, one_hot);
    } else {
      h = layer.forward(h);
    }
  }
  return h;
}

MinibatchStdImpl::MinibatchStdImpl(int64_t group_size) : group(group_size) {
  TORCH_CHECK(group >= 1, "a minibatch standard deviation group needs at least one sample, got ", group);
}

torch::Tensor MinibatchStdImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  int64_t g = std::min(group, n);
  while (n % g != 0) --g;
  // [g, n/g, c, h, w]: index [i, j] is sample i * n/g + j, so group j is dim 0 at column j.
  const torch::Tensor y = x.view({g, n / g, c, h, w});
  // Not y.var(0): LibTorch 1.13's variance over the outermost dimension took 3 ms here, against
  // well under one for these elementwise passes.
  const torch::Tensor centred = y - y.mean(0);
  const torch::Tensor spread = ((centred * centred).mean(0) + 1e-8).sqrt().mean({1, 2, 3});  // [n/g]
  return torch::cat({x, spread.view({1, n / g, 1, 1, 1}).expand({g, n / g, 1, h, w}).reshape({n, 1, h, w})}, 1);
}

DcganDiscriminatorImpl::DcganDiscriminatorImpl(int64_t w, datasets::RecordShape in, DNorm norm, int64_t mbstd_group,
                                               int64_t classes, int64_t blocks) {
  nn::Sequential seq;
  auto act = [] { return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2).inplace(true)); };
  // One of D's convolutions: spectrally normalised, or plain with a bias unless BatchNorm follows.
  auto conv = [&](int64_t cin, int64_t cout, int64_t kernel, int64_t stride, int64_t padding, bool batch_norm) {
    if (norm == DNorm::kSpectral) {
      seq->push_back(SpectralConv2d(cin, cout, kernel, stride, padding));
    } else {
      seq->push_back(down(cin, cout, kernel, stride, padding, /*bias=*/!batch_norm));
    }
    if (batch_norm) seq->push_back(nn::BatchNorm2d(cout));
  };
  // `blocks` 3x3 stride-1 convolutions at the resolution a downsampling convolution left.
  auto same_size = [&](int64_t channels) {
    for (int64_t b = 0; b < blocks; ++b) {
      conv(channels, channels, 3, 1, 1, norm == DNorm::kBatch);
      seq->push_back(act());
    }
  };
  auto block = [&](int64_t cin, int64_t cout) {
    conv(cin, cout, 4, 2, 1, norm == DNorm::kBatch);
    seq->push_back(act());
    same_size(cout);
  };
  conv(in.channels, w, 4, 2, 1, false);  // no BatchNorm on the first layer (Radford et al.)
  seq->push_back(act());
  same_size(w);
  // Before the last convolution: the minibatch standard deviation channel, if any. It reads all
  // of its kernel x kernel input: the features a conditional D projects the label onto.
  int64_t last_features = 0;
  auto last = [&](int64_t cin, int64_t kernel) {
    if (mbstd_group > 0) seq->push_back(MinibatchStd(mbstd_group));
    conv(cin + (mbstd_group > 0 ? 1 : 0), 1, kernel, 1, 0, false);
    last_features = (cin + (mbstd_group > 0 ? 1 : 0)) * kernel * kernel;
  };
  if (is_mnist_shape(in)) {  // 28 -> 14 -> 7 -> 1
    block(w, 2 * w);
    last(2 * w, 7);
  } else {  // 32 -> 16 -> 8 -> 4 -> 1
    block(w, 2 * w);
    block(2 * w, 4 * w);
    last(4 * w, 4);
  }
  net = register_module("net", seq);
  // Spectrally normalised layers keep their own (Xavier) initialisation: the N(0, 0.02) of
  // Radford et al. would only set the scale that the normalisation divides out, and with it
  // Adam's step relative to the weights.
  if (norm != DNorm::kSpectral) dcgan_init(*this);
  if (classes > 0) projection = register_module("projection", LabelProjection(classes, last_features));
}

torch::Tensor DcganDiscriminatorImpl::forward(const torch::Tensor& x, const torch::Tensor& labels) {
  if (!projection) return net->forward(x).view({-1});
  torch::Tensor h = x;
  const auto last = net->end() - 1;
  for (auto it = net->begin(); it != last; ++it) h = it->forward(h);
  return last->forward(h).view({-1}) + projection->forward(h, labels);
}

GanModels make_models(const Config& config, datasets::RecordShape shape) {
  torch::manual_seed(static_cast<uint64_t>(config.run.seed));
  GanModels m;
  const auto& mc = config.model;
  using Generate = std::function<torch::Tensor(const torch::Tensor&)>;
  // A new G of the configured architecture: G itself, and with train.g_ema_kimg its average.
  std::function<std::pair<std::shared_ptr<nn::Module>, Generate>()> new_generator;
  m.classes = label_classes(config);
  const int64_t g_in = mc.z_dim + m.classes;  // a conditional G reads [z, one_hot(label)]
  if (mc.arch == "mlp") {
    const bool images = config.data.name != "gaussian1d";
    new_generator = [&, images] {
      MlpGenerator g(g_in, mc.mlp.g_hidden, shape, images);
      return std::pair{g.ptr(), Generate([g](const torch::Tensor& z) mutable { return g->forward(z); })};
    };
    std::tie(m.g, m.generate) = new_generator();
    MlpDiscriminator d(shape, mc.mlp.d_hidden, mc.mlp.d_dropout, mc.mlp.d_maxout, mc.mlp.d_input_dropout, m.classes);
    m.d = d.ptr();
    m.discriminate = [d](const torch::Tensor& x, const torch::Tensor& labels) mutable {
      return d->forward(x, torch::Tensor(), labels);
    };
    m.discriminate_drawn = [d](const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor& u) mutable {
      return d->forward(x, u, labels);
    };
    m.d_draws = d->dropout_columns();
    m.d_per_sample = true;
  } else {
    if (!is_mnist_shape(shape) && !is_cifar_shape(shape))
      throw ConfigError("config error: " + config.where("model.arch") +
                        ": model.arch: dcgan supports 28x28x1 and 32x32x3 images, not " +
                        std::to_string(shape.height) + "x" + std::to_string(shape.width) + "x" +
                        std::to_string(shape.channels));
    new_generator = [&] {
      DcganGenerator g(g_in, mc.dcgan.g_width, shape, mc.dcgan.g_blocks, mc.dcgan.g_class_norm ? m.classes : 0);
      return std::pair{g.ptr(), Generate([g](const torch::Tensor& z) mutable { return g->forward(z); })};
    };
    std::tie(m.g, m.generate) = new_generator();
    const DNorm norm = mc.dcgan.d_norm == "spectral" ? DNorm::kSpectral
                       : mc.dcgan.d_norm == "none"   ? DNorm::kNone
                       : mc.dcgan.d_norm == "batch"  ? DNorm::kBatch
                       : config.train.loss == "wgan-gp" ? DNorm::kNone
                                                        : DNorm::kBatch;  // auto
    DcganDiscriminator d(mc.dcgan.d_width, shape, norm, mc.dcgan.d_mbstd_group, m.classes, mc.dcgan.d_blocks);
    m.d = d.ptr();
    m.discriminate = [d](const torch::Tensor& x, const torch::Tensor& labels) mutable { return d->forward(x, labels); };
    m.discriminate_drawn = [d](const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor&) mutable {
      return d->forward(x, labels);
    };
    m.d_per_sample = norm != DNorm::kBatch && mc.dcgan.d_mbstd_group == 0;
  }
  if (config.train.g_ema_kimg > 0) {
    // Built after D, so D's initial weights do not depend on whether the average is on; starts
    // as an exact copy of G.
    std::tie(m.g_ema, m.generate_ema) = new_generator();
    update_average(*m.g_ema, *m.g, /*beta=*/0);  // lerp with weight 1: exactly G's values
    m.g_ema->eval();  // only ever sampled; BatchNorm uses its running statistics
  }
  return m;
}

torch::Tensor GanModels::g_input(const torch::Tensor& z, const torch::Tensor& labels) const {
  if (classes == 0) return z;
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == z.size(0),
              "a conditional G needs one label per latent: ", z.size(0), " latents, labels ",
              labels.defined() ? c10::str(labels.sizes()) : std::string("none"));
  // Checked on the host only, where it costs no device sync. Labels already on a GPU are the
  // caller's to check (GanStep does, before copying them): there an index out of range would
  // only end in a device-side assert.
  if (labels.is_cpu() && labels.numel() > 0)
    TORCH_CHECK(labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < classes,
                "labels must be class indices in [0, ", classes, "), got ", labels.min().item<int64_t>(), "..",
                labels.max().item<int64_t>());
  return torch::cat({z, torch::one_hot(labels.to(z.device(), torch::kInt64), classes).to(z.scalar_type())}, 1);
}

GanModels GanModels::sampler() const {
  GanModels s = *this;
  if (g_ema) {
    s.g = g_ema;
    s.generate = generate_ema;
  }
  return s;
}

}  // namespace gantry
