"""Every user sees only what lies under their node; outside it, things do not exist (404)."""

from __future__ import annotations

from tests.helpers import Client, household_id, login


def registry_numbers(client: Client, headers: dict[str, str]) -> set[str]:
    items = client.get("/api/v1/households?limit=500", headers=headers).json()["items"]
    return {h["registry_no"] for h in items}


def communities(numbers: set[str]) -> set[str]:
    return {n.split("-")[1] for n in numbers}


def test_worker_of_community_1_cannot_read_a_household_of_community_3(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    own = client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=worker)
    assert own.status_code == 200
    other = client.get(f"/api/v1/households/{household_id('DB-C03-0001')}", headers=worker)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    # The answer is the same as for an id that exists nowhere: existence does not leak.
    nowhere = client.get("/api/v1/households/00000000-0000-0000-0000-000000000001", headers=worker)
    assert nowhere.json() == other.json()


def test_each_role_lists_exactly_its_jurisdiction(client: Client) -> None:
    assert communities(registry_numbers(client, login(client, "demo-worker-1"))) == {"C01"}
    assert communities(registry_numbers(client, login(client, "demo-worker-3"))) == {"C03"}
    assert communities(registry_numbers(client, login(client, "demo-reviewer-subdistrict"))) == {"C01", "C02"}
    assert communities(registry_numbers(client, login(client, "demo-admin"))) == {"C01", "C02", "C03", "C04"}


def test_admin_can_read_a_household_of_community_3(client: Client) -> None:
    admin = login(client, "demo-admin")
    response = client.get(f"/api/v1/households/{household_id('DB-C03-0001')}", headers=admin)
    assert response.status_code == 200
    assert response.json()["registry_no"] == "DB-C03-0001"


def test_worker_cannot_change_a_household_outside_their_community(client: Client) -> None:
    worker = login(client, "demo-worker-1")
    target = household_id("DB-C03-0002")
    response = client.patch(
        f"/api/v1/households/{target}", json={"version": 1, "address": "x"}, headers=worker
    )
    assert response.status_code == 404


def test_jurisdiction_tree_is_cut_at_the_callers_node(client: Client) -> None:
    nodes = client.get("/api/v1/jurisdictions", headers=login(client, "demo-reviewer-subdistrict")).json()
    assert [n["code"] for n in nodes] == ["S01", "C01", "C02"]
