"""`budget` admission: at most `per_minute` prompts from this node's users in any 60 s."""

from collections import deque

import attrs

from dmoa_p2p.admission import AdmissionContext, Decision

WINDOW_S = 60.0


@attrs.define
class BudgetAdmission:
    """Refuses a prompt when `per_minute` were admitted in the last minute (`-o per_minute=N`).

    One instance per node for the node's life, so the admitted times last across prompts.
    A refusal gives its cause ("cap": this node's own limit) and when to try again.
    """

    per_minute: int = attrs.field(default=60, validator=attrs.validators.ge(1))
    # state, not an option: init=False keeps it out of the options create_plugin accepts
    _admitted: deque[float] = attrs.field(factory=deque, init=False)

    def decide(self, context: AdmissionContext) -> Decision:
        now = context.now  # the node's clock: virtual under MockClock in tests
        while self._admitted and self._admitted[0] <= now - WINDOW_S:
            self._admitted.popleft()
        if len(self._admitted) < self.per_minute:
            self._admitted.append(now)
            return Decision("accept", context.request)
        reason = f"this node admits {self.per_minute} prompts a minute"
        retry_after_s = self._admitted[0] + WINDOW_S - now
        return Decision("refuse", context.request, reason, retry_after_s, cause="cap")
