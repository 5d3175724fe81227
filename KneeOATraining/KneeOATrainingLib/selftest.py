"""The KneeOATraining self-test body; the module file's KneeOATrainingTest runs it (Reload and Test, ctest)."""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from kneeoa.slicer import latent_plot, selftest, training


class TrainingSelfTest(selftest.ModuleSelfTestMixin, ScriptedLoadableModuleTest):
    """A tiny training on a phantom cohort, then its latent space (about a minute on a CPU)."""

    def test_TrainAndExploreLatentSpace(self):
        self.delayDisplay("Generating a phantom cohort")
        folder = self.phantomFolder("KneeOATrainingTest-", "cohort", n_train=8, n_test=4, shape=(24, 24, 24))
        logic = self.logicClass()

        self.delayDisplay("Training one epoch")
        monitor = logic.train(folder / "cohort", folder / "run", epochs=1, inputSize=24, width=4, device="cpu")
        self.assertEqual([row["epoch"] for row in monitor.history], [1])
        self.assertTrue(training.run_state(folder / "run").finished)
        table, chart = training.update_loss_plot(monitor.history, slicer.mrmlScene)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 1)

        self.delayDisplay("Latent space of the trained model")
        source = logic.computeLatent(folder / "run", device="cpu")
        plot = logic.showLatent(source, split="all")
        self.assertEqual(sum(t.GetTable().GetNumberOfRows() for t in plot.tables.values()), 12)
        case = latent_plot.table_points(next(iter(plot.tables.values())))[0]
        loaded = logic.loadCase(source, case["case_id"], plot.name)
        self.assertEqual(loaded["volume"].GetName(), case["case_id"])
        self.delayDisplay("Test passed")
