"""CI test for the Python client: drives a VM through
create -> start -> console output -> pause -> resume -> destroy.

Needs a running `tsvmm serve`; test/src/rpc-python.test.ts starts one and
sets TSVMM_ADDRESS, TSVMM_KERNEL, TSVMM_APPEND, TSVMM_READY (the console text
that shows the guest runs) and TSVMM_INPUT/TSVMM_ECHO (a line to type and the
answer to expect).
"""
import os
import unittest

from tsvmm_client import RpcError, TsvmmClient


class DriveAVm(unittest.TestCase):
    def test_create_start_console_pause_resume_destroy(self):
        env = os.environ
        with TsvmmClient.connect(env["TSVMM_ADDRESS"]) as c:
            self.assertEqual(c.server_capabilities["protocolVersion"].split(".")[0], "1")
            description = {"kernel": env["TSVMM_KERNEL"], "name": "python-example"}
            if env.get("TSVMM_APPEND"):
                description["append"] = env["TSVMM_APPEND"]
            vm = c.vm_create(description=description)["vmId"]
            self.assertEqual(c.vm_status(vmId=vm)["state"], "created")

            c.vm_start(vmId=vm)
            self.assertEqual(c.wait_for_state(vm, "running")["reason"], "started")
            self.assertIn(env["TSVMM_READY"], c.wait_for_console(vm, env["TSVMM_READY"], timeout=60))

            self.assertEqual(c.vm_pause(vmId=vm)["state"], "paused")
            self.assertEqual(c.wait_for_state(vm, "paused")["reason"], "paused-by-request")
            with self.assertRaises(RpcError) as err:
                c.vm_pause(vmId=vm)
            self.assertEqual(err.exception.code, 1002)
            self.assertEqual(c.vm_resume(vmId=vm)["state"], "running")

            c.console_write(vmId=vm, data=env["TSVMM_INPUT"])
            self.assertIn(env["TSVMM_ECHO"], c.wait_for_console(vm, env["TSVMM_ECHO"], timeout=60))

            c.vm_destroy(vmId=vm)
            self.assertNotIn(vm, [v["vmId"] for v in c.vm_list()["vms"]])

    def test_errors_carry_code_and_causes(self):
        with TsvmmClient.connect(os.environ["TSVMM_ADDRESS"]) as c:
            with self.assertRaises(RpcError) as err:
                c.vm_status(vmId="vm-does-not-exist")
            self.assertEqual(err.exception.code, 1001)
            self.assertEqual(err.exception.data["causes"], ["no VM with id 'vm-does-not-exist'"])
            with self.assertRaises(RpcError) as err:
                c.vm_create(description={"kernel": 42})
            self.assertEqual(err.exception.code, -32602)
            self.assertEqual(err.exception.data["path"], "description.kernel")


if __name__ == "__main__":
    unittest.main()
