"""The two-stage HourNAS search: vital blocks first, then the bulb."""
