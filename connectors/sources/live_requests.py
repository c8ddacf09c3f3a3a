"""Feed requests (``feed-request/v1``) from a logged simulator run: the load the allocation pipeline answers.

A feed server asks the allocation pipeline at each request with a live candidate and reports, with the user's next
request, what followed the previous decision; a session's end sends one last request with that outcome. These
functions rebuild that request stream from a :class:`LivePlatformLog` (open loop: the outcomes are the logged ones,
whatever the pipeline answers), for tests and offline studies; :mod:`connectors.sources.live_feed` plays the simulator
in closed loop instead.
"""

from __future__ import annotations

import numpy as np

from connectors.messages import AllocationOutcome, FeedRequest
from connectors.sources.live_platform import LivePlatform, LivePlatformConfig, LivePlatformLog, RequestState


def logged_requests(states: list[RequestState], log: LivePlatformLog) -> list[FeedRequest]:
    """The requests a feed server would have sent for a logged run, in time order: one per decision, carrying the
    outcome of the session's previous decision, and one at each session's end carrying the last outcome."""
    d, sessions = log.decisions, log.sessions
    ends_ms = sessions.start_ms + np.round((sessions.live_seconds + sessions.video_seconds) * 1000.0)
    requests: list[FeedRequest] = []
    previous: AllocationOutcome | None = None
    for i, state in enumerate(states):
        session = int(d.session[i])
        last = i + 1 == len(states) or int(d.session[i + 1]) != session
        next_ms = int(ends_ms[session]) if last else int(d.ts_ms[i + 1])
        requests.append(
            FeedRequest(
                request=f"r{i}", user=state.user, session=session, group=state.group, ts=int(d.ts_ms[i]) / 1000.0,
                fatigue=state.fatigue, live=list(state.live), streamer=state.streamer, ctr=state.ctr,
                outcome=previous,
            )
        )  # fmt: skip
        live = float(d.live_seconds[i])
        outcome = AllocationOutcome(
            request=f"r{i}",
            inserted=bool(d.inserted[i]),
            clicked=bool(d.clicked[i]),
            live_seconds=live,
            video_seconds=max((next_ms - int(d.ts_ms[i])) / 1000.0 - live, 0.0),  # short videos until the next
            exited=last,
        )
        previous = None if last else outcome
        if last:
            requests.append(
                FeedRequest(
                    request=f"end{session}", user=state.user, session=session, group=state.group,
                    ts=next_ms / 1000.0, outcome=outcome,
                )
            )  # fmt: skip
    return sorted(requests, key=lambda r: r.ts)


def simulated_requests(config: LivePlatformConfig, seed: int = 0) -> list[FeedRequest]:
    """The feed requests of one simulated run of ``config`` in which the top live room was always inserted."""
    states: list[RequestState] = []

    def always(state: RequestState) -> float:
        states.append(state)
        return 1.0

    platform = LivePlatform(config, seed=seed)
    return logged_requests(states, platform.run(always))
