"""The MPNN of Gilmer et al. (2017) as the Nash-MTL / FAMO / IGB QM9 experiments build it.

Paper: Gilmer, Schoenholz, Riley, Vinyals and Dahl, "Neural Message Passing for Quantum
Chemistry", ICML 2017 (https://arxiv.org/abs/1704.01212); the multi-task network is Nash-MTL's
``Net`` (AvivNavon/nash-mtl, ``experiments/quantum_chemistry/models.py``), which FAMO and IGB4MTL
reuse unchanged::

    h⁰_v = ReLU(W₀ x_v)                                lin0: node features -> dim
    m_v  = ReLU(W_r h_v + b + mean_{u→v} h_u Θ(e_uv))   NNConv, aggr="mean", Θ(e) = reshape(
                                                       MLP(e), dim × dim), MLP = Linear(E, 128)
                                                       ReLU Linear(128, dim²)
    h_v  = GRU(m_v, h_v)                               3 message-passing steps, one NNConv and
                                                       one GRU shared by the steps
    z    = ReLU(W₁ Set2Set(h, processing_steps=3))     readout 2·dim -> dim (shared)
    y_t  = head_t(z)                                   one Linear(dim, 1) per task

Two implementations of the same function, with the same parameters (names, shapes and initial
values for the same seed), so a state dict of one loads into the other:

* ``pyg``: PyTorch Geometric's ``NNConv`` and ``Set2Set`` on a PyG ``Batch`` (the published
  modules; needs the ``graph`` extra, imported only when used).
* ``dense`` (default): the graphs of a batch padded to its largest molecule. The edge network is
  evaluated once per forward pass (PyG evaluates it in each of the three steps, on the same
  inputs), and the message sum is factorised through the edge network's last layer:
  ``Σ_u h_u Θ(e_uv) = Σ_k a_k(e_uv) (h_u A_k) + h_u B`` with ``a = ReLU(Linear(e))``, so no
  ``dim × dim`` matrix per edge is ever formed. Equal to ``pyg`` to float rounding (tested); a
  QM9 training step (batch 32, dim 64, one CPU thread) takes 0.37 CPU-seconds instead of 2.5.

Inputs are ``PaddedGraphs``; the ``pyg`` implementation also takes any PyG ``Batch`` with ``x``,
``edge_index``, ``edge_attr`` and ``batch``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.models.hps import HardParameterSharing
from mtl_backends.registry import ConfigError

IMPLEMENTATIONS: tuple[str, ...] = ("dense", "pyg")
GRAPH_INSTALL_HINT = 'pip install -e ".[graph]"'


def import_pyg(module: str = "torch_geometric") -> ModuleType:
    """Import a PyTorch Geometric module, or say which extra installs it.

    Raises:
        ImportError: ``torch_geometric`` is not installed (names the install command).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not err.name.startswith("torch_geometric"):
            raise
        raise ImportError(
            f"the MPNN's 'pyg' implementation needs PyTorch Geometric; install the graph extra "
            f"with: {GRAPH_INSTALL_HINT} (or use implementation 'dense', which needs no extra)"
        ) from None


class PaddedGraphs(NamedTuple):
    """A batch of ``B`` graphs padded to ``n`` nodes each.

    Attributes:
        nodes: Node features ``[B, n, F]`` (padding rows are ignored).
        node_mask: Which nodes exist ``[B, n]`` (bool; each graph's nodes come first).
        edges: Edge features ``[B, n, n, E]``: ``edges[b, v, u]`` belongs to the edge ``u → v``.
        edge_mask: Which edges exist ``[B, n, n]`` (bool; ``edge_mask[b, v, u]``: ``u → v``).
    """

    nodes: Tensor
    node_mask: Tensor
    edges: Tensor
    edge_mask: Tensor

    def to_pyg(self) -> Any:
        """The same graphs as a PyTorch Geometric ``Batch`` (nodes in order, edges by target).

        Raises:
            ImportError: PyTorch Geometric is not installed.
        """
        data = import_pyg("torch_geometric.data")
        b, n = self.node_mask.shape
        node_id = torch.cumsum(self.node_mask.reshape(-1).long(), 0).reshape(b, n) - 1
        g, v, u = torch.nonzero(self.edge_mask, as_tuple=True)
        counts = self.node_mask.sum(1)
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        return data.Batch(
            x=self.nodes[self.node_mask],
            edge_index=torch.stack([node_id[g, u], node_id[g, v]]),
            edge_attr=self.edges[g, v, u],
            batch=torch.repeat_interleave(torch.arange(b, device=counts.device), counts),
            ptr=ptr,
        )


@dataclass(frozen=True)
class MPNNConfig:
    """Sizes of the MPNN (defaults: Nash-MTL's QM9 network).

    Attributes:
        node_dim: Node features (QM9: 11).
        edge_dim: Edge features (Nash-MTL: 5, four bond types and the distance).
        dim: Hidden width (published 64).
        steps: Message-passing steps (published 3).
        set2set_steps: Set2Set processing steps (published 3).
        edge_hidden: Hidden width of the edge network (published 128).
        implementation: ``dense`` (default) or ``pyg`` (see the module docstring).
    """

    node_dim: int = 11
    edge_dim: int = 5
    dim: int = 64
    steps: int = 3
    set2set_steps: int = 3
    edge_hidden: int = 128
    implementation: str = "dense"

    def __post_init__(self) -> None:
        for name in ("node_dim", "edge_dim", "dim", "steps", "set2set_steps", "edge_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"MPNN {name} must be an integer >= 1, got {value!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ConfigError(
                f"unknown MPNN implementation {self.implementation!r}; valid choices: "
                f"{', '.join(IMPLEMENTATIONS)}"
            )


class DenseNNConv(nn.Module):
    """PyG's ``NNConv(dim, dim, edge_net, aggr="mean")`` on padded graphs, factorised.

    Paper: Gilmer et al., ICML 2017 (https://arxiv.org/abs/1704.01212), the edge network
    ``Θ(e) = reshape(W₂ ReLU(W₁ e + b₁) + b₂, dim × dim)``:
    ``out_v = W_r h_v + b + mean_{u→v} h_u Θ(e_uv)``, computed as
    ``mean_{u→v} Σ_k a_k(e_uv) (h_u A_k) + h_u B`` with ``a = ReLU(W₁ e + b₁)``,
    ``A_k[c, d] = W₂[c·dim + d, k]`` and ``B = reshape(b₂, dim × dim)``.

    Parameter names and shapes are NNConv's (``nn.0``, ``nn.2``, ``lin``, ``bias``).

    Args:
        dim: Node width (input and output).
        edge_dim: Edge features.
        edge_hidden: Hidden width of the edge network.
    """

    def __init__(self, dim: int, edge_dim: int, edge_hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.edge_hidden = edge_hidden
        self.nn = nn.Sequential(
            nn.Linear(edge_dim, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, dim * dim)
        )
        self.lin = nn.Linear(dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))

    def edge_hidden_features(self, edges: Tensor, edge_mask: Tensor) -> Tensor:
        """``a = ReLU(W₁ e + b₁)`` of every edge, zero where there is none ``[B, n, n, H]``."""
        first = self.nn[0]
        return F.relu(first(edges)) * edge_mask.unsqueeze(-1).to(edges.dtype)

    def forward(self, h: Tensor, hidden: Tensor, graphs: PaddedGraphs, degree: Tensor) -> Tensor:
        """One convolution.

        Args:
            h: States of the existing nodes ``[N, dim]`` (``node_mask`` order).
            hidden: ``edge_hidden_features`` of the batch ``[B, n, n, H]``.
            graphs: The batch (masks).
            degree: Incoming edges of each existing node ``[N]``.

        Returns:
            The new node states ``[N, dim]``.
        """
        b, n = graphs.node_mask.shape
        last = self.nn[2]
        assert isinstance(last, nn.Linear)
        a = last.weight.view(self.dim, self.dim, self.edge_hidden).permute(0, 2, 1)
        u = (h @ a.reshape(self.dim, self.edge_hidden * self.dim)).view(
            -1, self.edge_hidden, self.dim
        )
        u_pad = h.new_zeros(b, n, self.edge_hidden, self.dim)
        u_pad[graphs.node_mask] = u
        messages = torch.einsum("bvuk,bukd->bvd", hidden, u_pad)
        h_pad = h.new_zeros(b, n, self.dim)
        h_pad[graphs.node_mask] = h @ last.bias.view(self.dim, self.dim)
        messages = messages + torch.einsum("bvu,bud->bvd", graphs.edge_mask.to(h.dtype), h_pad)
        mean = messages[graphs.node_mask] / degree.clamp_min(1).unsqueeze(-1).to(h.dtype)
        out: Tensor = mean + self.lin(h) + self.bias
        return out


class DenseSet2Set(nn.Module):
    """PyG's ``Set2Set(dim, processing_steps)`` on padded graphs.

    Paper: Vinyals, Bengio and Kudlur, "Order Matters: Sequence to sequence for sets", ICLR 2016
    (https://arxiv.org/abs/1511.06391): ``q_t = LSTM(q*_{t-1})``,
    ``a_v = softmax_v(h_v · q_t)`` over the graph's nodes, ``r_t = Σ_v a_v h_v``,
    ``q*_t = [q_t, r_t]``; returns ``q*_T`` ``[B, 2·dim]``. Parameter names are PyG's (``lstm``).

    Args:
        dim: Node width.
        processing_steps: ``T``.
    """

    def __init__(self, dim: int, processing_steps: int) -> None:
        super().__init__()
        self.dim = dim
        self.processing_steps = processing_steps
        self.lstm = nn.LSTM(2 * dim, dim)

    def forward(self, h_pad: Tensor, node_mask: Tensor) -> Tensor:
        """``q*_T`` of each graph from its node states ``h_pad`` ``[B, n, dim]``."""
        b = h_pad.shape[0]
        state = (h_pad.new_zeros(1, b, self.dim), h_pad.new_zeros(1, b, self.dim))
        q_star = h_pad.new_zeros(b, 2 * self.dim)
        for _ in range(self.processing_steps):
            q, state = self.lstm(q_star.unsqueeze(0), state)
            q = q.view(b, self.dim)
            e = (h_pad * q.unsqueeze(1)).sum(-1).masked_fill(~node_mask, float("-inf"))
            # A graph without nodes pools to zero, as in PyG (its softmax row is all NaN).
            attention = torch.softmax(e, dim=1).nan_to_num(0.0)
            r = (attention.unsqueeze(-1) * h_pad).sum(1)
            q_star = torch.cat([q, r], dim=-1)
        return q_star


class MPNN(nn.Module):
    """The shared trunk of Nash-MTL's QM9 network: graphs in, one ``dim`` vector per graph out.

    Paper: Gilmer et al., ICML 2017 (https://arxiv.org/abs/1704.01212); the multi-task network of
    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022
    (https://arxiv.org/abs/2202.01017). ``h⁰ = ReLU(lin0 x)``; ``steps`` times
    ``h = GRU(ReLU(NNConv(h, e)), h)``; ``z = ReLU(lin1 Set2Set(h))`` (module docstring).

    Parameters are drawn in one fixed order whatever the implementation (the PyG modules are
    built without drawing and take the same values), so one seed gives one initial network.

    Args:
        config: Sizes and implementation.

    Raises:
        ImportError: ``implementation="pyg"`` without PyTorch Geometric (names the extra).
    """

    def __init__(self, config: MPNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or MPNNConfig()
        c = self.config
        self.lin0 = nn.Linear(c.node_dim, c.dim)
        dense_conv = DenseNNConv(c.dim, c.edge_dim, c.edge_hidden)
        # NNConv's root weight is drawn uniform(±1/√dim) and its bias zero, as PyG does.
        bound = 1.0 / c.dim**0.5
        nn.init.uniform_(dense_conv.lin.weight, -bound, bound)
        self.gru = nn.GRU(c.dim, c.dim)
        dense_set2set = DenseSet2Set(c.dim, c.set2set_steps)
        self.lin1 = nn.Linear(2 * c.dim, c.dim)
        self.conv: nn.Module = dense_conv
        self.set2set: nn.Module = dense_set2set
        if c.implementation == "pyg":
            pyg_nn = import_pyg("torch_geometric.nn")
            with torch.random.fork_rng(devices=[]):
                edge_net = nn.Sequential(
                    nn.Linear(c.edge_dim, c.edge_hidden),
                    nn.ReLU(),
                    nn.Linear(c.edge_hidden, c.dim * c.dim),
                )
                conv = pyg_nn.NNConv(c.dim, c.dim, edge_net, aggr="mean")
                set2set = pyg_nn.Set2Set(c.dim, processing_steps=c.set2set_steps)
            conv.load_state_dict(dense_conv.state_dict())
            set2set.load_state_dict(dense_set2set.state_dict())
            self.conv, self.set2set = conv, set2set

    def forward(self, graphs: PaddedGraphs | Any) -> Tensor:
        """One representation ``[B, dim]`` per graph.

        Args:
            graphs: ``PaddedGraphs``; with the ``pyg`` implementation also a PyG ``Batch``.

        Raises:
            TypeError: A PyG batch given to the ``dense`` implementation.
        """
        if self.config.implementation == "pyg":
            batch = graphs.to_pyg() if isinstance(graphs, PaddedGraphs) else graphs
            return self._forward_pyg(batch)
        if not isinstance(graphs, PaddedGraphs):
            raise TypeError(
                f"the dense MPNN takes PaddedGraphs, got {type(graphs).__name__}; use "
                "implementation 'pyg' for PyTorch Geometric batches"
            )
        return self._forward_dense(graphs)

    def _forward_dense(self, graphs: PaddedGraphs) -> Tensor:
        conv, set2set = self.conv, self.set2set
        assert isinstance(conv, DenseNNConv) and isinstance(set2set, DenseSet2Set)
        mask = graphs.node_mask
        out = F.relu(self.lin0(graphs.nodes[mask]))
        state = out.unsqueeze(0)
        hidden = conv.edge_hidden_features(graphs.edges, graphs.edge_mask)
        degree = graphs.edge_mask.sum(-1)[mask]
        for _ in range(self.config.steps):
            m = F.relu(conv(out, hidden, graphs, degree))
            out, state = self.gru(m.unsqueeze(0), state)
            out = out.squeeze(0)
        h_pad = out.new_zeros(*mask.shape, self.config.dim)
        h_pad[mask] = out
        return F.relu(self.lin1(set2set(h_pad, mask)))

    def _forward_pyg(self, batch: Any) -> Tensor:
        out = F.relu(self.lin0(batch.x))
        state = out.unsqueeze(0)
        for _ in range(self.config.steps):
            m = F.relu(self.conv(out, batch.edge_index, batch.edge_attr))
            out, state = self.gru(m.unsqueeze(0), state)
            out = out.squeeze(0)
        pooled = self.set2set(out, batch.batch, dim_size=int(batch.num_graphs))
        return F.relu(self.lin1(pooled))


def mpnn_hps(
    n_tasks: int, config: MPNNConfig | None = None, adapter: nn.Module | None = None
) -> HardParameterSharing:
    """Nash-MTL's QM9 network: the MPNN shared, one ``Linear(dim, 1)`` head per task.

    Args:
        n_tasks: Heads.
        config: MPNN sizes and implementation.
        adapter: A parameter-free module run first, turning the benchmark's inputs into
            ``PaddedGraphs`` (e.g. molecules into graphs); ``None``: inputs are graphs already.
    """
    trunk = MPNN(config)
    encoder: nn.Module = trunk if adapter is None else nn.Sequential(adapter, trunk)
    heads = [nn.Linear(trunk.config.dim, 1) for _ in range(n_tasks)]
    return HardParameterSharing(encoder, heads)


__all__ = [
    "GRAPH_INSTALL_HINT",
    "IMPLEMENTATIONS",
    "MPNN",
    "DenseNNConv",
    "DenseSet2Set",
    "MPNNConfig",
    "PaddedGraphs",
    "import_pyg",
    "mpnn_hps",
]
