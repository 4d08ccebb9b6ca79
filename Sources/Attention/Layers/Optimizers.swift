import Foundation

/// A rule that updates a parameter tensor from its gradient: one training step.
///
/// A layer's `update(with:using:slot:)` hands each of its parameter tensors to
/// the optimizer with a distinct `slot`, the key of any per-parameter state
/// (momentum, Adam's moments), so one optimizer can serve several layers given
/// disjoint slots.
public protocol Optimizer {
    /// Updates `parameter` in place from `gradient` (same shape).
    ///
    /// - Parameters:
    ///   - parameter: the weight or bias, updated in place.
    ///   - gradient: ∂L/∂parameter, the same shape.
    ///   - slot: which state (momentum, moments) belongs to this parameter; give
    ///     each parameter its own slot.
    /// - Throws: `AttentionError.invalidShape` if the shapes differ.
    mutating func update(_ parameter: inout Tensor<Float>, gradient: Tensor<Float>, slot: Int) throws
}

extension Optimizer {
    static func checkShapes(_ parameter: Tensor<Float>, _ gradient: Tensor<Float>, slot: Int) throws {
        guard parameter.shape == gradient.shape else {
            throw AttentionError.invalidShape(
                argument: "gradient (slot \(slot))", expected: "\(parameter.shape) (the parameter's shape)", actual: gradient.shape)
        }
    }
}

/// Stochastic gradient descent, `θ ← θ − lr · (g + weightDecay · θ)`, with
/// optional heavy-ball momentum `v ← momentum · v + g', θ ← θ − lr · v`
/// (PyTorch's `torch.optim.SGD` with dampening 0, nesterov off).
public struct SGD: Optimizer, Sendable {
    /// The step size.
    public var learningRate: Float
    /// The momentum factor in [0, 1); 0 = plain SGD.
    public var momentum: Float
    /// L2 penalty added to the gradient.
    public var weightDecay: Float
    private var velocity: [Int: [Float]] = [:]

    /// Plain SGD, with optional momentum and (coupled) weight decay, as
    /// PyTorch's `torch.optim.SGD`.
    ///
    /// - Parameters:
    ///   - learningRate: the step size (> 0).
    ///   - momentum: in [0, 1); default 0.
    ///   - weightDecay: ≥ 0; default 0.
    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    /// One SGD step on `parameter`.
    ///
    /// - Parameters:
    ///   - parameter: the weight or bias, updated in place.
    ///   - gradient: ∂L/∂parameter, the same shape.
    ///   - slot: which state (momentum, moments) belongs to this parameter; give
    ///     each parameter its own slot.
    /// - Throws: `AttentionError.invalidShape` if the shapes differ.
    public mutating func update(_ parameter: inout Tensor<Float>, gradient: Tensor<Float>, slot: Int) throws {
        try Self.checkShapes(parameter, gradient, slot: slot)
        let (lr, mu, decay) = (learningRate, momentum, weightDecay)
        var v = momentum > 0 ? velocity[slot] ?? [Float](repeating: 0, count: parameter.count) : []
        parameter.withUnsafeMutableBufferPointer { theta in
            for i in theta.indices {
                var g = gradient.scalars[i] + decay * theta[i]
                if mu > 0 {
                    v[i] = mu * v[i] + g
                    g = v[i]
                }
                theta[i] -= lr * g
            }
        }
        if momentum > 0 { velocity[slot] = v }
    }
}

/// Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization",
/// Algorithm 1), with bias-corrected moments; `decoupledWeightDecay` gives
/// AdamW (Loshchilov & Hutter 2019): `θ ← θ − lr · (m̂ / (√v̂ + ε) + λθ)`.
/// As PyTorch's `torch.optim.Adam`/`AdamW`.
public struct Adam: Optimizer, Sendable {
    /// The step size α.
    public var learningRate: Float
    /// β₁, β₂: the decay rates of the first and second moment estimates.
    public var beta1: Float, beta2: Float
    /// ε, added to √v̂.
    public var epsilon: Float
    /// λ of AdamW's decoupled weight decay (0: plain Adam).
    public var decoupledWeightDecay: Float
    private var moments: [Int: (m: [Float], v: [Float], steps: Int)] = [:]

    /// Adam (or AdamW with `decoupledWeightDecay` > 0) with PyTorch's defaults.
    ///
    /// - Parameters:
    ///   - learningRate: α (PyTorch's default 1e-3).
    ///   - beta1: β₁, the first moment's decay rate (default 0.9).
    ///   - beta2: β₂, the second moment's decay rate (default 0.999).
    ///   - epsilon: ε, added to √v̂ (default 1e-8).
    ///   - decoupledWeightDecay: AdamW's λ, default 0.
    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                decoupledWeightDecay: Float = 0) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// One Adam step on `parameter` (its slot's step count advances by one).
    ///
    /// - Parameters:
    ///   - parameter: the weight or bias, updated in place.
    ///   - gradient: ∂L/∂parameter, the same shape.
    ///   - slot: which state (momentum, moments) belongs to this parameter; give
    ///     each parameter its own slot.
    /// - Throws: `AttentionError.invalidShape` if the shapes differ.
    public mutating func update(_ parameter: inout Tensor<Float>, gradient: Tensor<Float>, slot: Int) throws {
        try Self.checkShapes(parameter, gradient, slot: slot)
        var state = moments[slot] ?? (
            m: [Float](repeating: 0, count: parameter.count), v: [Float](repeating: 0, count: parameter.count), steps: 0)
        state.steps += 1
        let t = Float(state.steps)
        let correction1 = 1 - pow(beta1, t), correction2 = 1 - pow(beta2, t)
        let (b1, b2, lr, eps, decay) = (beta1, beta2, learningRate, epsilon, decoupledWeightDecay)
        parameter.withUnsafeMutableBufferPointer { theta in
            for i in theta.indices {
                let g = gradient.scalars[i]
                state.m[i] = b1 * state.m[i] + (1 - b1) * g
                state.v[i] = b2 * state.v[i] + (1 - b2) * g * g
                let mHat = state.m[i] / correction1, vHat = state.v[i] / correction2
                theta[i] -= lr * (mHat / (vHat.squareRoot() + eps) + decay * theta[i])
            }
        }
        moments[slot] = state
    }
}

extension Linear {
    /// One optimizer step on the weight (slot `slot`) and the bias (slot `slot + 1`).
    ///
    /// - Parameters:
    ///   - gradients: from ``backward(input:outputGradient:threads:)``.
    ///   - optimizer: ``SGD``, ``Adam`` or another ``Optimizer``.
    ///   - slot: the optimizer slot of the weight.
    /// - Throws: `AttentionError.invalidShape` if a gradient's shape differs, or
    ///   `AttentionError.invalidValue` if the bias gradient is missing for a layer with bias;
    ///   checked before anything is stepped, so on an error the layer is unchanged.
    public mutating func update(with gradients: LinearParameterGradients, using optimizer: inout some Optimizer, slot: Int = 0) throws {
        try update(with: gradients, using: &optimizer, slot: slot, name: "gradients")
    }

    mutating func update(with gradients: LinearParameterGradients, using optimizer: inout some Optimizer, slot: Int, name: String) throws {
        try checkStep(with: gradients, name: name)
        try optimizer.update(&weight, gradient: gradients.weight, slot: slot)
        if bias != nil, let biasGradient = gradients.bias {
            try optimizer.update(&bias!, gradient: biasGradient, slot: slot + 1)
        }
    }

    /// Throws what a step with `gradients` would, before anything is changed,
    /// so that a failed step leaves the layer (and the optimizer's state) as it was.
    func checkStep(with gradients: LinearParameterGradients, name: String) throws {
        guard gradients.weight.shape == weight.shape else {
            throw AttentionError.invalidShape(
                argument: "\(name).weight", expected: "\(weight.shape) (the weight's shape)", actual: gradients.weight.shape)
        }
        guard let bias else { return }
        guard let biasGradient = gradients.bias else {
            throw AttentionError.invalidValue(argument: "\(name).bias", expected: "a bias gradient for a layer with bias", actual: "nil")
        }
        guard biasGradient.shape == bias.shape else {
            throw AttentionError.invalidShape(argument: "\(name).bias", expected: "\(bias.shape) (the bias's shape)", actual: biasGradient.shape)
        }
    }
}
