"""Shadow prompts: requests the router makes up, indistinguishable on the wire from a client's.

Theory of operation (research §6.7)
-----------------------------------
With post-hoc audits of real traffic a worker gains nothing by spotting shadow
prompts, so they serve three narrower ends: they give a node on probation jobs
to be audited before it has earned trust, they probe latency with known work,
and they exercise sampler settings that real traffic rarely uses.

:func:`shadow_request` draws one request from a traffic-like distribution:
a chat of one or two messages assembled from templates and topics, sometimes
with a system message, and a sampler mix (greedy and sampled, several
``max_tokens``, now and then a seed, as clients send them); its job key comes
from its fresh id, so a cached answer never fits.  Its
``request_id`` comes from the same generator as clients' requests and its
frame has exactly their shape, so nothing on the wire tells it apart.  The
router always audits shadow jobs.

:class:`ShadowPlanner` is the pure scheduler: given the nodes on probation and
``now``, it says which node is due for its next shadow prompt (each every
``interval_s``, spread by a random phase so they do not come in bursts) and
when to look again.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random
from typing import Final

from meshcore_sdk.protocol import ChatMessage, GenerateFrame, SamplingParams

__all__ = ["ShadowPlanner", "shadow_request"]

_TOPICS: Final = (
    "photosynthesis",
    "the water cycle",
    "compound interest",
    "how a bicycle stays upright",
    "the history of the printing press",
    "why the sky is blue",
    "how vaccines work",
    "the rules of chess",
    "sourdough bread",
    "black holes",
    "the French Revolution",
    "recursion in programming",
    "plate tectonics",
    "how to brew green tea",
    "the immune system",
    "supply and demand",
)
_TEMPLATES: Final = (
    "Explain {topic} in {n} sentences.",
    "Can you give me a short summary of {topic}?",
    "Write a haiku about {topic}.",
    "What are {n} interesting facts about {topic}?",
    "I'm a beginner. How would you describe {topic} to a ten-year-old?",
    "List {n} questions a student might ask about {topic}.",
    "Write a tweet about {topic}.",
    "What is the most common misconception about {topic}?",
)
_SYSTEMS: Final = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer briefly.",
    "You are a friendly tutor.",
)
_TEMPERATURES: Final = (0.0, 0.0, 0.7, 0.8, 1.0)
_MAX_TOKENS: Final = (32, 48, 64, 96, 128)
_TOP_P: Final = (1.0, 1.0, 0.95, 0.9)
_TOP_K: Final = (0, 0, 40, 64)


def shadow_request(rng: Random, *, request_id: str, model: str) -> GenerateFrame:
    """One traffic-like request for ``model`` (a ``sha256:`` name), drawn with ``rng``."""
    topic = rng.choice(_TOPICS)
    text = rng.choice(_TEMPLATES).format(topic=topic, n=rng.randint(2, 5))
    messages = [ChatMessage(role="user", content=text)]
    if rng.random() < 0.5:
        messages.insert(0, ChatMessage(role="system", content=rng.choice(_SYSTEMS)))
    temperature = rng.choice(_TEMPERATURES)
    params = SamplingParams(
        max_tokens=rng.choice(_MAX_TOKENS),
        temperature=temperature,
        top_p=rng.choice(_TOP_P) if temperature else 1.0,
        top_k=rng.choice(_TOP_K) if temperature else 0,
        seed=rng.randrange(2**31) if rng.random() < 0.2 else None,
    )
    return GenerateFrame(request_id=request_id, model=model, messages=messages, params=params)


class ShadowPlanner:
    """When each node on probation gets its next shadow prompt (see the module docstring).

    Args:
        interval_s: the mean time between two shadow prompts to one node.
        rng: draws each node's phase.
    """

    def __init__(self, interval_s: float, rng: Random) -> None:
        self.interval_s = interval_s
        self.rng = rng
        self._due: dict[str, float] = {}

    def due(self, probation: Iterable[str], *, now: float) -> list[str]:
        """The nodes due for a shadow prompt at ``now`` (each is then scheduled one interval later)."""
        wanted = set(probation)
        for node_id in list(self._due):
            if node_id not in wanted:
                del self._due[node_id]
        for node_id in wanted - self._due.keys():
            self._due[node_id] = now + self.rng.uniform(0, self.interval_s)
        ready = sorted(node_id for node_id, at in self._due.items() if at <= now)
        for node_id in ready:
            self._due[node_id] = now + self.interval_s * self.rng.uniform(0.5, 1.5)
        return ready

    def get_timer(self) -> float | None:
        """When the next node is due (None: no node on probation)."""
        return min(self._due.values(), default=None)
