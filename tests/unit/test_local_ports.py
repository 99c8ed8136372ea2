"""`make run` listens on fixed ports. Each must be one no outgoing connection can hold first: Linux hands the local
ends of connections out from 32768 up (ip_local_port_range), and the mesh opens dozens of them, to PostgreSQL
above all, before its last service binds. Nor may they meet the tests' free ports, so both can run at once."""

from __future__ import annotations

from devtools.mesh import local_ports, plan_mesh
from devtools.run import NATS_PORT, PG_PORT
from devtools.stack import LISTENER_PORTS

EPHEMERAL_FLOOR = 32768  # Linux's default; macOS and Windows start higher, at 49152


def make_run_ports() -> list[int]:
    plan = plan_mesh(local_ports())
    return [PG_PORT, NATS_PORT, *(port for s in plan.services for port in (s.port, s.metrics_port))]


def test_every_port_of_make_run_is_below_the_ports_outgoing_connections_get() -> None:
    assert [port for port in make_run_ports() if port >= EPHEMERAL_FLOOR] == []


def test_make_run_ports_are_distinct_and_apart_from_the_tests_free_ports() -> None:
    ports = make_run_ports()
    assert len(set(ports)) == len(ports)
    assert [port for port in ports if port in LISTENER_PORTS] == []
