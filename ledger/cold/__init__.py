"""The cold tier: object stores, archive of sealed sessions and captures, remote retention."""
