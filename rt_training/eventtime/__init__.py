"""The pipeline's event-time clock: every window is measured against a watermark, not the wall clock."""

from rt_training.eventtime.clock import EventClock, event_clock, max_event_time, read_event_clock, rows_up_to

__all__ = ["EventClock", "event_clock", "max_event_time", "read_event_clock", "rows_up_to"]
