"""Several worker processes on one host (``[proxy] workers``): how many (:mod:`.cpus`), the listen
socket they share (:mod:`.sockets`), restarting a dead one (:mod:`.supervision`) and one metrics
scrape for them all (:mod:`.merge`). The supervisor process that puts these together is
:mod:`mediaproxy.supervisor`."""
