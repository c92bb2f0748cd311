import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    # Upstream forgot the dependency on demo_core's first migration; venvseal.toml adds it
    # with [[substitute]] (as authentik 2026.2.0 needed for one of its migrations).
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Token",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=64)),
                ("tenant", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             to="demo_core.tenant")),
            ],
        ),
    ]
