#!/usr/bin/env python3
"""A minimal pipecat echo bot on Twilio Media Streams, for bench/capacity.py's comparison.

Runs in its own virtual environment (``pipecat-ai==1.14.0``, ``fastapi``, ``uvicorn``: the bench
creates it), one uvicorn worker, so one core, like one proxy process:

    bench/.venv-pipecat/bin/python bench/pipecat_echo.py --port 9400

Per WebSocket on ``/twilio``: it reads Twilio's ``connected`` and ``start`` messages itself (for
the ``streamSid``), then runs the pipeline ``FastAPIWebsocketTransport.input() -> Echo ->
FastAPIWebsocketTransport.output()`` with pipecat's ``TwilioFrameSerializer`` (µ-law 8 kHz <->
16-bit PCM; the pipeline runs at 8 kHz in and out, so nothing is resampled). ``Echo`` turns every
``InputAudioRawFrame`` (the caller's audio, 20 ms per Twilio message) into an
``OutputAudioRawFrame`` with the same samples, and passes every other frame on. The output
transport paces what it is given at real time in 40 ms messages (its default of 4 x 10 ms), as it
would a bot's speech. No VAD, no interruptions, no marks (pipecat's Twilio serializer sends none).

``auto_hang_up`` is off and no Twilio credentials are given, so the serializer never calls
Twilio's REST API when a call ends: nothing leaves loopback. When the caller closes, the pipeline
is cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

SAMPLE_RATE_HZ = 8000


class Echo(FrameProcessor):
    """The caller's audio back to the caller: InputAudioRawFrame -> OutputAudioRawFrame."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate,
                                                      num_channels=frame.num_channels))
        else:
            await self.push_frame(frame, direction)


app = FastAPI()


@app.websocket("/twilio")
async def twilio_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    start: dict[str, Any] | None = None
    try:
        while start is None:  # Twilio: "connected", then "start" (with the streamSid)
            message = json.loads(await websocket.receive_text())
            if message.get("event") == "start":
                start = message["start"]
    except WebSocketDisconnect:
        return
    serializer = TwilioFrameSerializer(
        stream_sid=start["streamSid"], call_sid=start.get("callSid"),
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
    transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer))
    task = PipelineTask(Pipeline([transport.input(), Echo(), transport.output()]),
                        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE_HZ,
                                              audio_out_sample_rate=SAMPLE_RATE_HZ),
                        enable_rtvi=False, idle_timeout_secs=None)

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: Any, client: Any) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def main() -> int:
    p = argparse.ArgumentParser(description="A minimal pipecat Twilio echo bot (benchmark peer).")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log-level", default="WARNING", help="pipecat's loguru level (default WARNING)")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_size=1 << 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
