"""ScaleGMN (Kalogeropoulos, Bouritsas & Panagakis, NeurIPS 2024, "Scale Equivariant Graph
Metanetworks", arXiv 2406.10685): message passing on the neural graph whose every function is
equivariant to hidden-neuron permutations *and* to the activation's scaling symmetries, pooled by an
invariant readout.

The symmetry. Give hidden neuron ``i`` a multiplier ``q_i`` (``q_i = ±1`` for the odd activations
tanh and sine: "sign"; ``q_i > 0`` for relu, leaky_relu and identity: "positive"; ``q = 1`` for input
and output neurons, which no symmetry moves). Then

    b_i -> q_i b_i,        w_ij -> q_i w_ij / q_j        (w_ij: the weight from neuron j into i)

leaves the network's function unchanged (``wsl.weights.symmetry``). On the neural graph
(``wsl.weights.graph``) node ``i`` carries ``b_i`` and edge ``j -> i`` carries ``w_ij`` (a
convolution's kernel as one vector of taps, all scaled alike), so ScaleGMN keeps every node feature
``q_i``-equivariant (``x_i -> q_i x_i``), every edge feature ``q_i / q_j``-equivariant, and pools
invariants. Permuting hidden neurons relabels nodes; every sum below runs over a node's neighbours,
so that equivariance comes from the graph as in NG-GNN (``wsl.nn.neural_graph``).

Building blocks (the paper's scale-invariant and scale-equivariant nets), for a vector ``z`` that
scales as a whole (``z -> q z``); ``σ`` is SiLU:

    ScaleInv(z) = W2 u(z) + c2, with
        sign:        u = σ(W1 z + c1) + σ(-W1 z + c1)       symmetrisation rho(z) + rho(-z) over {±1}
        positive:    u = σ(W1 z / |z| + c1)                  canonicalisation onto the unit sphere
        permutation: u = σ(W1 z + c1)                        no scaling constraint (the ablation)
    ScaleEq(z)     = (Γ z) ⊙ ScaleInv(z)                    Γ linear without bias: ScaleEq(q z) = q ScaleEq(z)
    ReScaleEq(a, e) = (Γ_a a) ⊙ (Γ_e e)                     scales by the product of a's and e's multipliers

Input and output neurons (``q = 1``) take the unconstrained ``u`` inside ``ScaleInv``: nothing is
gained by canonicalising what no symmetry moves (the official code gives them their own MLPs).

Lift: ``x_i = Γ_b b_i ⊙ p_layer(i)`` for hidden neurons and ``x_i = Γ_b b_i + p_i`` for input/output
neurons (input neurons have no bias); ``e_ij = Γ_w w_ij ⊙ p_layer(ij)``. Positional codes multiply
what scales (a diagonal linear map keeps equivariance) and are added only where nothing scales
(the official code's positional encodings; the permutation-only variant adds them everywhere).

One layer, for edge ``j -> i``, node ``i``:

    m_i   = mean_j ReScaleEq(x_j, e_ij)                     forward message: q_j · q_i/q_j = q_i
    s_i   = mean_k ReScaleEq(x_k, ê_ki)                     backward message over i's outgoing edges
    x_i' = x_i + ScaleEq([x_i, m_i, s_i])                   node update (the concatenation scales by q_i)
    e_ij' = e_ij + (Γ_u e_ij) ⊙ σ(G_dst(x_i') + G_src(x_j'))  edge update, G_* = ScaleInv (invariant gate;
                                                            none in the last layer: the readout reads nodes)

The backward message (the bidirectional variant, ScaleGMN-B) needs an edge feature that scales as
``q_i / q_k`` on the edge ``i -> k``: for sign symmetries ``q^-1 = q``, so ``ê = e`` itself; for
positive scaling it is a second edge feature ``f`` lifted from the reciprocal weight
(``w / |w|^2`` over a kernel's taps, ``1 / w`` for an MLP, as the official code does) and updated
like ``e``. The reciprocal is clipped at ``|w|^2 < 1e-24`` so a zero weight stays finite: weights
that small are the only place this variant is not exactly invariant. Messages are averaged rather
than summed (a constant per layer: equivariance is the same) so that feature sizes do not grow with
fan-in (784-input MLPs).

Messages (``message``). The paper's message function is
``MSG(x_i, x_j, e_ij) = ScaleEq([x_i, ReScaleEq(x_j, e_ij)])`` per edge: ``message="scale_eq"``
(the node part of its linear maps runs per node, and every edge takes the constrained ``ScaleInv``).
Edges outnumber neurons by the fan-in and it runs three more matmuls per edge and direction, about
2.9x the time of NG-GNN on MNIST-INR SIRENs; the default ``message="rescale"`` sends
``ReScaleEq(x_j, e_ij)`` alone and leaves the nonlinearity to the node update (about NG-GNN's time):
still a sum of ``W_ij``-weighted neighbour features, which is what simulating the input network's
forward pass needs. The edge update's invariant is a gate on the sum of per-neuron invariants (the
official code runs an MLP per edge on both end neurons' invariants). All are equivariant by the same
argument.

Probe features (``probe_features=K`` > 0; Kofinas et al. 2024's probe features, built by
``wsl.nn.neural_graph.GraphProbes``): K learned probe inputs run through every network, and node
``i`` gets its values on them beside its bias, ``x_i = Γ_b [b_i, a_i(p_1), ..., a_i(p_K)]`` (``Γ_b``
still linear without bias). No canonicalisation is needed, and none is applied (no ``|a|``, no
per-neuron normalisation, which would discard the sign or the magnitude): a hidden neuron's
activation vector transforms exactly as its bias does. Under ``q``, neuron ``i``'s pre-activation
``z_i = sum_j w_ij a_j + b_i`` becomes ``q_i z_i`` (its inputs ``a_j`` scale by ``q_j``, its weights by
``q_i / q_j``), and the activation commutes with the scaling, ``σ(q z) = q σ(z)`` (odd σ with
``q = ±1``, positively homogeneous σ with ``q > 0``: the definition of the symmetry), so
``a_i -> q_i a_i``, by induction over the layers. So ``[b_i, a_i]`` scales by ``q_i`` as a whole, as the
lift needs, and permutations relabel it with the neuron. Input and output neurons (``q = 1``) get the
probes' coordinates and the network's outputs, which no symmetry changes. The squash: asinh is odd,
so it keeps ``a -> ±a`` (sign symmetry, and the permutation-only variant); it is not homogeneous, so
for positive scaling hidden neurons' values stay linear (as the weights do: ``linear_normalization``)
and only the input and output neurons' are squashed. The property predictor runs the probes on
the networks as they are (``forward(wb, raw=...)``, ``Encoder.runs_networks``) while the graph
reads the normalized weights; the normalization commutes with every ``q`` (asinh of a per-tensor
ratio for sign flips, the ratio alone for positive scaling), so the encoder stays invariant.

Readout (``readout="full"``): ``mean_i ScaleInv(x_i)`` over hidden neurons, the mean over input
neurons and the output neurons' features in order (these two are invariant as they are: ``q = 1``),
into an MLP head. ``readout="io"`` uses the input and output neurons only (the official code's
MNIST-INR configuration reads out the last layer).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import MessagePassing

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.base import Encoder, mlp
from wsl.nn.neural_graph import GraphProbes, _probed
from wsl.weights import WeightBatch
from wsl.weights.graph import graph_layout, to_graph
from wsl.weights.symmetry import scaling_symmetry
from zoo.errors import InputError

READOUTS = ("full", "io")
MESSAGES = ("rescale", "scale_eq")
_TINY = 1e-24  # floor of a squared norm: a zero vector stays finite; far below any real weight's square


def resolve_symmetry(spec: WeightSpaceSpec, symmetry: str) -> str:
    """``"sign"``, ``"positive"`` or ``"permutation"``: the symmetry ScaleGMN respects for ``spec``.
    ``"auto"`` reads the spec's activation (no scaling symmetry: permutations only)."""
    if symmetry == "permutation":
        return symmetry
    if symmetry != "auto":
        raise InputError(f"scalegmn: symmetry must be 'auto' or 'permutation', found {symmetry!r}")
    if spec.activation is None:
        raise InputError(f"scalegmn: weight space {spec.architecture!r} has a per-model activation, so no one "
                         "scaling symmetry holds; pass symmetry='permutation'")
    return scaling_symmetry(spec.activation) or "permutation"


class ScaleInvariant(nn.Module):
    """``ScaleInv``: ``[n, d_in] -> [n, d_out]``, invariant to ``z -> q z`` per row (see the module
    docstring); rows where ``free`` is True (input/output neurons) take the unconstrained form."""

    def __init__(self, d_in: int, d_out: int, hidden: int, symmetry: str):
        super().__init__()
        self.symmetry = symmetry
        self.inner = nn.Linear(d_in, hidden)  # W1 z (computed without bias) and c1
        self.outer = nn.Linear(hidden, d_out)  # W2, c2

    def forward(self, z: Tensor, free: Tensor | None = None) -> Tensor:
        return self.head(nn.functional.linear(z, self.inner.weight), z.square().sum(-1, keepdim=True), free)

    def head(self, pre: Tensor, sq_norm: Tensor, free: Tensor | None = None) -> Tensor:
        """``ScaleInv(z)`` from ``pre = W1 z`` and ``sq_norm = |z|^2`` (``[n, 1]``): what a caller
        that has ``z`` in parts (``ScaleEquivariant.on_edges``) computes without concatenating."""
        act, c1 = nn.functional.silu, self.inner.bias
        plain = act(pre + c1)
        if self.symmetry == "permutation":
            return self.outer(plain)
        if self.symmetry == "sign":
            u = plain + act(c1 - pre)
        else:  # positive: W1 (z / |z|)
            u = act(pre * sq_norm.clamp_min(_TINY).rsqrt() + c1)
        if free is not None:
            u = torch.where(free.unsqueeze(-1), plain, u)
        return self.outer(u)


class ScaleEquivariant(nn.Module):
    """``ScaleEq(z) = (Γ z) ⊙ ScaleInv(z)``: ``[n, d_in] -> [n, d_out]``, ``ScaleEq(q z) = q ScaleEq(z)``."""

    def __init__(self, d_in: int, d_out: int, hidden: int, symmetry: str):
        super().__init__()
        self.gamma = nn.Linear(d_in, d_out, bias=False)
        self.inv = ScaleInvariant(d_in, d_out, hidden, symmetry)

    def forward(self, z: Tensor, free: Tensor | None = None) -> Tensor:
        return self.gamma(z) * self.inv(z, free)

    def on_edges(self, x: Tensor, r: Tensor, index: Tensor) -> Tensor:
        """``ScaleEq([x[index], r])`` per edge, for node features ``x [n, d_x]`` and edge features
        ``r [E, d_r]``: the node part of each linear map runs once per node, not once per edge. Every
        edge takes the constrained form (valid for input/output neurons too, and a per-edge choice
        would cost as much as the rest of the function)."""
        d_x, lin = x.shape[-1], nn.functional.linear
        gamma, inner = self.gamma.weight, self.inv.inner.weight
        gz = lin(x, gamma[:, :d_x])[index] + lin(r, gamma[:, d_x:])  # Γ z
        pre = lin(x, inner[:, :d_x])[index] + lin(r, inner[:, d_x:])  # W1 z
        sq = x.square().sum(-1, keepdim=True)[index] + r.square().sum(-1, keepdim=True)  # |z|^2
        return gz * self.inv.head(pre, sq)


class ScaleGMNConv(MessagePassing):
    """One ScaleGMN layer: messages, node update, edge update (see the module docstring).

    ``reciprocal`` (positive scaling, bidirectional): backward messages read the second edge
    feature ``f`` (``q_j / q_i`` on edge ``j -> i``), updated like ``e``. ``update_edges=False``
    (an encoder's last layer, whose edges nothing reads) returns ``e`` and ``f`` as they are."""

    def __init__(self, hidden: int, symmetry: str, bidirectional: bool = True, dropout: float = 0.0,
                 update_edges: bool = True, message: str = "rescale"):
        super().__init__(aggr="mean", node_dim=0)
        d = hidden
        if message not in MESSAGES:
            raise InputError(f"scalegmn: message must be one of {list(MESSAGES)}, found {message!r}")
        if message == "scale_eq":  # MSG = ScaleEq([x_i, ReScaleEq(x_j, e_ij)]), one per direction
            self.msg_fwd = ScaleEquivariant(2 * d, d, d, symmetry)
            self.msg_bwd = ScaleEquivariant(2 * d, d, d, symmetry) if bidirectional else None
        self.message_kind = message
        self.bidirectional = bidirectional
        self.reciprocal = bidirectional and symmetry == "positive"
        directions = 2 if bidirectional else 1
        self.node_proj = nn.Linear(d, directions * d, bias=False)  # Γ_a x for each direction, per node
        # Per edge (one matmul each: slicing one wide product costs a copy in the backward pass):
        self.fwd_edge = nn.Linear(d, d, bias=False)  # Γ_e e, forward message
        self.bwd_edge = nn.Linear(d, d, bias=False) if bidirectional else None  # Γ_e' e or Γ_e' f, backward
        self.update_edges = update_edges
        if update_edges:
            self.upd_edge = nn.Linear(d, d, bias=False)  # Γ_u e, edge update
            self.upd_back = nn.Linear(d, d, bias=False) if self.reciprocal else None  # Γ_u' f
            self.gate = ScaleInvariant(d, (4 if self.reciprocal else 2) * d, d, symmetry)  # G_dst, G_src (e, f)
        self.node_update = ScaleEquivariant((1 + directions) * d, d, d, symmetry)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, e: Tensor, f: Tensor | None, edge_index: Tensor, reverse: Tensor,
                free: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``x [nodes, d]``, ``e [edges, d]``, ``f`` (``reciprocal`` only) ``[edges, d]``;
        ``reverse`` is ``edge_index.flip(0)``; ``free [nodes]`` marks input/output neurons."""
        a = self.node_proj(x).chunk(2 if self.bidirectional else 1, dim=-1)
        parts = [x, self._aggregate(x, a[0], self.fwd_edge(e), edge_index, "msg_fwd")]  # x_i, m_i
        if self.bidirectional:
            b_back = self.bwd_edge(f if self.reciprocal else e)
            parts.append(self._aggregate(x, a[1], b_back, reverse, "msg_bwd"))  # s_i
        x = x + self.drop(self.node_update(torch.cat(parts, -1), free))
        if not self.update_edges:
            return x, e, f
        src, dst = edge_index
        g = self.gate(x, free).chunk(4 if self.reciprocal else 2, dim=-1)
        e = e + self.drop(self.upd_edge(e) * nn.functional.silu(g[0][dst] + g[1][src]))
        if self.reciprocal:
            f = f + self.drop(self.upd_back(f) * nn.functional.silu(g[2][dst] + g[3][src]))
        return x, e, f

    def _aggregate(self, x: Tensor, a: Tensor, b: Tensor, edge_index: Tensor, msg: str) -> Tensor:
        """``mean_j MSG`` into every node, along ``edge_index`` (``j -> i``); ``a = Γ_a x`` per node,
        ``b = Γ_e e`` per edge; ``msg`` names the per-edge ``ScaleEq`` of ``message="scale_eq"``."""
        n = x.shape[0]
        if self.message_kind == "rescale":
            return self.propagate(edge_index, a=a, b=b, size=(n, n))
        src, dst = edge_index
        r = self.message(a[src], b)
        return self.aggregate(getattr(self, msg).on_edges(x, r, dst), dst, dim_size=n)

    def message(self, a_j: Tensor, b: Tensor) -> Tensor:
        return a_j * b  # ReScaleEq(x_j, e_ij)


class ScaleGMN(Encoder):
    """Scale- and permutation-invariant encoder of a weight space (MLP, SIREN or CNN): ``[B, out_dim]``.

    ``hidden``: width of node and edge features; ``layers``: ScaleGMN layers; ``symmetry``:
    ``"auto"`` (the spec's activation: sign flips for tanh/sine, positive scaling for relu, none for
    sigmoid/gelu) or ``"permutation"`` (hidden-neuron permutations only); ``bidirectional``: backward
    messages too (ScaleGMN-B); ``readout``: ``"full"`` or ``"io"``; ``message``: ``"rescale"`` or
    the paper's per-edge ``"scale_eq"`` (module docstring); ``probe_features``: about that many learned
    probes, every node's values on them beside its bias (module docstring; 0: none, the encoder as it
    was, same parameters).
    """

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 64, layers: int = 4,
                 symmetry: str = "auto", bidirectional: bool = True, readout: str = "full", dropout: float = 0.0,
                 message: str = "rescale", probe_features: int = 0):
        super().__init__(spec, out_dim)
        self.symmetry = resolve_symmetry(spec, symmetry)
        self.linear_normalization = self.symmetry == "positive"  # asinh is odd (sign flips survive it), not homogeneous
        if readout not in READOUTS:
            raise InputError(f"scalegmn: readout must be one of {list(READOUTS)}, found {readout!r}")
        if hidden < 1 or layers < 1:
            raise InputError(f"scalegmn: expected hidden >= 1 and layers >= 1, found hidden={hidden}, layers={layers}")
        if message not in MESSAGES:
            raise InputError(f"scalegmn: message must be one of {list(MESSAGES)}, found {message!r}")
        lay = graph_layout(spec)
        if readout == "full" and not spec.permutable:
            raise InputError(f"scalegmn: readout 'full' pools hidden neurons and weight space {spec.architecture!r} "
                             "has none; use readout='io'")
        d = hidden
        self.readout = readout
        self.reciprocal = bidirectional and self.symmetry == "positive"
        self.register_buffer("node_layer", lay.node_layer.clone(), persistent=False)
        self.register_buffer("fixed", lay.fixed.clone(), persistent=False)
        self.register_buffer("fixed_index", lay.fixed_index.clamp(min=0), persistent=False)
        self.register_buffer("edge_layer", lay.edge_layer.clone(), persistent=False)
        in_group, out_group = lay.groups[0], spec.layers[-1].out_group
        self.register_buffer("input_nodes", self._group_nodes(lay, in_group), persistent=False)
        self.register_buffer("output_nodes", self._group_nodes(lay, out_group), persistent=False)
        self.register_buffer("hidden_nodes", (~lay.fixed).nonzero().squeeze(1), persistent=False)

        self.probes = GraphProbes(spec, probe_features) if probe_features > 0 else None
        k = self.probes.num_probes if self.probes is not None else 0
        self.node_in = nn.Linear(1 + k, d, bias=False)  # Γ_b, on the bias and the probe values
        self.edge_in = nn.Linear(lay.edge_dim, d, bias=False)  # Γ_w, over a kernel's taps
        # Positional codes: multiply scaled features, add to fixed ones (all added: permutation only).
        multiply = self.symmetry != "permutation"
        self.layer_code = nn.Parameter(float(multiply) + 0.1 * torch.randn(len(lay.groups), d))
        self.edge_code = nn.Parameter(float(multiply) + 0.1 * torch.randn(len(spec.layers), d))
        self.fixed_emb = nn.Embedding(lay.num_fixed, d)
        if self.reciprocal:
            self.back_in = nn.Linear(lay.edge_dim, d, bias=False)
            self.back_code = nn.Parameter(1.0 + 0.1 * torch.randn(len(spec.layers), d))
        self.layers = nn.ModuleList(ScaleGMNConv(d, self.symmetry, bidirectional, dropout, update_edges=k < layers - 1,
                                                 message=message) for k in range(layers))
        if readout == "full":
            self.readout_inv = ScaleInvariant(d, d, d, self.symmetry)
        pooled = (2 if readout == "full" else 1) * d + len(self.output_nodes) * d
        self.head = mlp(pooled, d, out_dim, 2, dropout)

    @staticmethod
    def _group_nodes(lay, group: str) -> Tensor:
        off = lay.group_offsets[group]
        return torch.arange(off, off + lay.spec.groups[group])

    def lift(self, wb: WeightBatch, raw: WeightBatch | None = None) -> tuple[Batch, Tensor, Tensor, Tensor | None]:
        """The neural graph of ``wb`` and its lifted features: ``x [B*N, d]``, ``e [B*E, d]``, ``f``;
        ``raw``: the networks the probes run (default ``wb``)."""
        g = to_graph(wb)
        B, d = len(wb), self.node_in.out_features
        fixed = self.fixed.unsqueeze(-1)
        x = g.x
        if self.probes is not None:  # values at the probes, beside the bias (module docstring)
            p = self.probes(_probed(wb, raw))  # [B, N, K]: hidden rows scale by q_i, fixed rows by 1
            p = torch.where(fixed, torch.asinh(p), p) if self.symmetry == "positive" else torch.asinh(p)
            x = torch.cat([x.view(B, -1, 1), p.to(x.dtype)], -1).flatten(0, 1)
        x = self.node_in(x).view(B, -1, d)
        e = self.edge_in(g.edge_attr).view(B, -1, d)
        fixed_code = self.fixed_emb(self.fixed_index)
        hidden_code = self.layer_code[self.node_layer]
        if self.symmetry == "permutation":
            x = x + torch.where(fixed, fixed_code, hidden_code)
            e = e + self.edge_code[self.edge_layer]
        else:
            x = torch.where(fixed, x + fixed_code, x * hidden_code)
            e = e * self.edge_code[self.edge_layer]
        f = None
        if self.reciprocal:  # w / |w|^2 per edge: scales as q_j / q_i
            w = g.edge_attr
            f = self.back_in(w / w.square().sum(-1, keepdim=True).clamp_min(_TINY)).view(B, -1, d)
            f = (f * self.back_code[self.edge_layer]).flatten(0, 1)
        return g, x.flatten(0, 1), e.flatten(0, 1), f

    def graph(self, wb: WeightBatch, raw: WeightBatch | None = None) -> tuple[Tensor, Tensor]:
        """Node and edge features after the ScaleGMN layers: ``[B, N, hidden]``, ``[B, E, hidden]``
        (node ``i`` scales by ``q_i``, edge ``j -> i`` by ``q_i / q_j``; the last layer, whose edges
        the readout does not read, updates the nodes only)."""
        self.check_spec(wb)
        g, x, e, f = self.lift(wb, raw)
        B = len(wb)
        free = self.fixed.repeat(B)
        reverse = g.edge_index.flip(0)
        for layer in self.layers:
            x, e, f = layer(x, e, f, g.edge_index, reverse, free)
        return x.view(B, -1, x.shape[-1]), e.view(B, -1, e.shape[-1])

    def pool(self, h: Tensor) -> Tensor:
        """Invariant summary of node features ``[B, N, d]`` (module docstring)."""
        pooled = []
        if self.readout == "full":
            pooled.append(self.readout_inv(h[:, self.hidden_nodes]).mean(1))
        pooled += [h[:, self.input_nodes].mean(1), h[:, self.output_nodes].flatten(1)]
        return torch.cat(pooled, -1)

    def forward(self, wb: WeightBatch, raw: WeightBatch | None = None) -> Tensor:
        """``raw``: the same networks unnormalized, for the probes to run (default: ``wb``)."""
        h, _ = self.graph(wb, raw)
        return self.head(self.pool(h))
