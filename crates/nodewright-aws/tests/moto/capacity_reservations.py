# On-demand capacity reservations for moto's EC2, which has none (moto 5.2):
# CreateCapacityReservation and DescribeCapacityReservations, shaped as the
# EC2 API reference describes them, so the tests can resolve an
# EC2NodeClass's capacityReservationSelectorTerms through the real client.
# DescribeCapacityReservations takes ids and the filters nodewright sends:
# state, instance-platform, owner-id, instance-match-criteria, tag:KEY and
# tag-key.
import secrets

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

_RESERVATIONS = {}


def _store(response):
    return _RESERVATIONS.setdefault((response.current_account, response.region), {})


def create_capacity_reservation(self):
    count = self._get_int_param("InstanceCount")
    if not count or count < 1:
        raise EC2ClientError("InvalidParameterValue", "InstanceCount must be at least 1")
    tags = self._parse_tag_specification().get("capacity-reservation", {})
    reservation = {
        "CapacityReservationId": "cr-" + secrets.token_hex(9)[:17],
        "OwnerId": self.current_account,
        "InstanceType": self._get_param("InstanceType"),
        "InstancePlatform": self._get_param("InstancePlatform"),
        "AvailabilityZone": self._get_param("AvailabilityZone"),
        "Tenancy": self._get_param("Tenancy") or "default",
        "TotalInstanceCount": count,
        "AvailableInstanceCount": count,
        "State": "active",
        "EndDateType": self._get_param("EndDateType") or "unlimited",
        "InstanceMatchCriteria": self._get_param("InstanceMatchCriteria") or "open",
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    _store(self)[reservation["CapacityReservationId"]] = reservation
    return ActionResult({"CapacityReservation": reservation})


def _matches(reservation, name, values):
    tags = {t["Key"]: t["Value"] for t in reservation["Tags"]}
    if name.startswith("tag:"):
        key = name[4:]
        return key in tags and tags[key] in values
    if name == "tag-key":
        return any(v in tags for v in values)
    field = {
        "state": "State",
        "instance-platform": "InstancePlatform",
        "owner-id": "OwnerId",
        "instance-match-criteria": "InstanceMatchCriteria",
        "instance-type": "InstanceType",
        "availability-zone": "AvailabilityZone",
    }.get(name)
    if field is None:
        raise EC2ClientError("InvalidParameterValue", f"The filter '{name}' is invalid")
    return reservation[field] in values


def describe_capacity_reservations(self):
    store = _store(self)
    ids = self._get_param("CapacityReservationIds", [])
    unknown = [i for i in ids if i not in store]
    if unknown:
        raise EC2ClientError("InvalidCapacityReservationId.NotFound", f"The capacity reservation ID '{unknown[0]}' does not exist")
    filters = self._filters_from_querystring()
    found = [
        r
        for i, r in sorted(store.items())
        if (not ids or i in ids) and all(_matches(r, name, values) for name, values in filters.items())
    ]
    return ActionResult({"CapacityReservations": found})


EC2Response.create_capacity_reservation = create_capacity_reservation
EC2Response.describe_capacity_reservations = describe_capacity_reservations
